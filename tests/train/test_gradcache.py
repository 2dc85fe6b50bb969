"""GradCache (``cached_embed_and_backward``) is exact: same loss, same gradients, same dropout masks.

- With dropout on, it equals an uncached step that sees the same per-chunk dropout masks: a forward chunk
  by chunk *with* graph from the same RNG state, concatenated, loss, backward (float64, over chunk sizes,
  uneven last chunks included), and it leaves the RNG where that reference leaves it.
- The replay reproduces every dropout mask of the first pass (captured with forward hooks).
- With dropout off, it equals the trainer's plain full-batch step (see the test for why not bit for bit).
- It composes with DDP (2 gloo processes, ``no_sync`` on all but the last chunk): equal to one process,
  uncached, on the full batch.
- Memory mechanism: the activations saved for backward at any moment are those of one chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from ddp_helpers import WORLD, float64_encoder, gloo_group, one_thread, prefixed, run_workers
from torch import Tensor, nn

from csrl.losses import build_loss
from csrl.models.encoder import Encoder
from csrl.train.step import cached_embed_and_backward, compute_loss, split_views

SENTENCES = [
    "a man is playing a guitar",
    "the cat sleeps on the warm sofa all afternoon",
    "children run across the green park",
    "stock prices fell",
    "a plane is taking off from the runway at dawn",
    "she is cooking pasta",
]
TRIPLES = [
    ("a man is playing a guitar", "a person plays the guitar on stage", "a woman is slicing onions"),
    ("the cat sleeps", "a cat is asleep on the warm sofa", "the dog barks at the mailman"),
    ("children run across the green park", "kids are running in a park", "an old man reads"),
    ("stock prices fell sharply today", "markets dropped", "the recipe needs two eggs"),
    ("a plane is taking off", "an airplane departs from the runway at dawn", "a boat sinks"),
    ("she is cooking pasta in the kitchen", "a woman makes spaghetti", "he repairs his bicycle"),
    ("two dogs play in the snow", "dogs are playing outside in winter snow", "a cup of hot tea"),
    ("the senate passed the bill", "lawmakers approved the law", "the river floods every spring"),
]
N_VIEWS = 2
SEED = 1234
no_autocast = contextlib.nullcontext


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


@pytest.fixture
def features(model_dir: Path) -> dict[str, Tensor]:
    enc = float64_encoder(model_dir, dropout=False)
    return enc.tokenize(SENTENCES + SENTENCES, max_length=32)  # the trainer's unsupervised layout


def grads_of(enc: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in enc.named_parameters() if p.grad is not None}


def chunks(features: dict[str, Tensor], size: int) -> list[dict[str, Tensor]]:
    rows = features["input_ids"].shape[0]
    return [{k: v[s : s + size] for k, v in features.items()} for s in range(0, rows, size)]


def cached_step(
    enc: Encoder, features: dict[str, Tensor], loss_fn: nn.Module, size: int
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    enc.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    out, views = cached_embed_and_backward(enc, features, N_VIEWS, loss_fn, size, autocast=no_autocast)
    return out.total, torch.cat([views.z1, views.z2]), grads_of(enc)


def chunked_reference(
    enc: Encoder, features: dict[str, Tensor], loss_fn: nn.Module, size: int
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Uncached, with graph, chunk by chunk from the same RNG state: the same dropout masks per chunk."""
    enc.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    z = torch.cat([enc(c).float() for c in chunks(features, size)])  # .float() as the cached path does
    out = compute_loss(loss_fn, split_views(z, N_VIEWS))
    out.total.backward()
    return out.total.detach(), z.detach(), grads_of(enc)


def plain_step(
    enc: Encoder, features: dict[str, Tensor], loss_fn: nn.Module
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The trainer's uncached step: one forward over all views, loss, backward."""
    enc.zero_grad(set_to_none=True)
    torch.manual_seed(SEED)
    z = enc(features).float()
    out = compute_loss(loss_fn, split_views(z, N_VIEWS))
    out.total.backward()
    return out.total.detach(), z.detach(), grads_of(enc)


LOSSES: dict[str, tuple[str, dict[str, Any]]] = {
    "infonce": ("infonce", {"temperature": 0.05}),
    "barlowtwins-mod": ("barlowtwins", {"variant": "mod"}),
}


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("size", [1, 4, 5, 7, 12, 64])  # 12 rows: even, uneven (5+5+2, 7+5), one chunk
def test_cached_equals_uncached_with_the_same_dropout_masks(
    model_dir: Path, features: dict[str, Tensor], loss: str, size: int
) -> None:
    name, params = LOSSES[loss]
    loss_fn = build_loss(name, **params)
    enc = float64_encoder(model_dir, dropout=True)
    with one_thread():
        ref_loss, ref_z, ref_grads = chunked_reference(enc, features, loss_fn, size)
        ref_rng = torch.get_rng_state()
        c_loss, c_z, c_grads = cached_step(enc, features, loss_fn, size)
    assert torch.equal(torch.get_rng_state(), ref_rng)  # the RNG goes on as after one pass
    torch.testing.assert_close(c_z, ref_z, rtol=0, atol=0)  # first pass == reference forward
    torch.testing.assert_close(c_loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert c_grads.keys() == ref_grads.keys() and len(c_grads) > 0
    for n, g in ref_grads.items():
        assert g.abs().sum() > 0, n
        torch.testing.assert_close(c_grads[n], g, rtol=1e-6, atol=1e-6, msg=prefixed(n))
    # and dropout matters: a different seed gives different embeddings
    torch.manual_seed(SEED + 1)
    with torch.no_grad(), one_thread():
        assert not torch.allclose(enc(features).float(), ref_z)


def test_replay_reproduces_each_chunks_dropout_masks(model_dir: Path, features: dict[str, Tensor]) -> None:
    enc = float64_encoder(model_dir, dropout=True)
    calls: list[tuple[str, Tensor]] = []  # (module, dropped units) in call order

    def recorder(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            calls.append((name, (output == 0) & (inputs[0] != 0)))

        return hook

    # module dropouts (embeddings, attention and FFN outputs); attention-probability dropout runs inside
    # scaled_dot_product_attention and is covered by the gradient test above
    handles = [m.register_forward_hook(recorder(n)) for n, m in enc.named_modules() if isinstance(m, nn.Dropout)]
    n_chunks = 3  # 12 rows in chunks of 5, 5, 2
    with one_thread():
        cached_step(enc, features, build_loss("infonce"), 5)
    for h in handles:
        h.remove()
    per_chunk = len(calls) // (2 * n_chunks)
    assert per_chunk > 0 and len(calls) == 2 * n_chunks * per_chunk  # a no-graph pass, then the replay
    first, replay = calls[: n_chunks * per_chunk], calls[n_chunks * per_chunk :]
    for k, ((name_a, a), (name_b, b)) in enumerate(zip(first, replay, strict=True)):
        assert name_a == name_b
        assert torch.equal(a, b), f"call {k} ({name_a}): the replay drew a different dropout mask"
    assert sum(int(m.sum()) for _, m in first) > 0  # dropout did drop units
    # the RNG runs on between chunks: chunk 1's masks are not chunk 0's again
    assert not torch.equal(first[0][1], first[per_chunk][1])


def test_cached_equals_plain_full_batch_step_without_dropout(model_dir: Path, features: dict[str, Tensor]) -> None:
    """Without dropout, cached == the trainer's one-forward step, to 1e-12 relative, not bit for bit.

    The forward is bit-identical (each row's arithmetic does not depend on the other rows of its chunk),
    so the loss is too; but a weight gradient is a sum over rows, accumulated chunk by chunk by the cached
    step and in one matrix product by the plain step, and floating-point addition is not associative.
    """
    enc = float64_encoder(model_dir, dropout=False)
    loss_fn = build_loss("infonce")
    with one_thread():
        p_loss, p_z, p_grads = plain_step(enc, features, loss_fn)
        for size in (1, 3, 5, 12):
            c_loss, c_z, c_grads = cached_step(enc, features, loss_fn, size)
            assert torch.equal(c_z, p_z)
            assert torch.equal(c_loss, p_loss)
            for n, g in p_grads.items():
                if size >= len(SENTENCES) * N_VIEWS:  # one chunk: the same sums in the same order
                    assert torch.equal(c_grads[n], g), n
                # some gradients are zero up to round-off (key biases: softmax is shift-invariant), so the
                # tolerance is relative to the largest entry, not to each entry
                scale = float(g.abs().max())
                torch.testing.assert_close(c_grads[n], g, rtol=0, atol=1e-12 * max(scale, 1.0), msg=prefixed(n))


class SavedActivations:
    """Counts the bytes autograd holds for backward (parameters and their views excluded), and the peak."""

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.param_storages = {p.untyped_storage().data_ptr() for p in params}
        self.live = 0
        self.peak = 0

    def pack(self, t: Tensor) -> Any:
        if t.untyped_storage().data_ptr() in self.param_storages:
            return t
        return _Held(t, self)

    def unpack(self, held: Any) -> Tensor:
        return held.t if isinstance(held, _Held) else held

    def hooks(self) -> contextlib.AbstractContextManager[None]:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


class _Held:
    def __init__(self, t: Tensor, owner: SavedActivations) -> None:
        self.t, self.owner, self.n = t, owner, t.numel() * t.element_size()
        owner.live += self.n
        owner.peak = max(owner.peak, owner.live)

    def __del__(self) -> None:
        self.owner.live -= self.n


def test_cached_memory_holds_one_chunk_of_activations(model_dir: Path) -> None:
    """The mechanism behind GradCache's flat memory: the peak activation bytes of a cached step over 48
    rows in chunks of 8 equal those of an uncached step over 8 rows (the loss graph over 48 rows is tiny).
    Real peak RSS with MiniLM is measured by ``bench/train_throughput.py --memory``."""
    enc = float64_encoder(model_dir, dropout=True)
    params = list(enc.parameters())
    sentences = [f"{s} number {i}" for i in range(4) for s in SENTENCES]  # 24 sentences, 48 rows
    feats = enc.tokenize(sentences + sentences, max_length=32)
    loss_fn = build_loss("infonce")

    def peak(fn: Any) -> int:
        counter = SavedActivations(params)
        with counter.hooks(), one_thread():
            fn()
        enc.zero_grad(set_to_none=True)
        assert counter.live == 0  # every saved activation was released after backward
        return counter.peak

    def uncached(rows: int) -> None:
        sub = {k: v[:rows] for k, v in feats.items()}
        compute_loss(loss_fn, split_views(enc(sub), N_VIEWS)).total.backward()

    cached = peak(lambda: cached_embed_and_backward(enc, feats, N_VIEWS, loss_fn, 8, autocast=no_autocast))
    one_chunk = peak(lambda: uncached(8))
    full = peak(lambda: uncached(48))
    assert cached <= 1.2 * one_chunk, (cached, one_chunk)
    assert full >= 4 * one_chunk, (full, one_chunk)  # the counter does see the batch size


# ----------------------------------------------------------------------------- cached + DDP
LOCAL_BATCH, DDP_CHUNK = 4, 5  # local rows 3 views x 4 = 12: chunks of 5, 5, 2


def _flat(records: list[tuple[str, str, str]]) -> list[str]:
    return [r[v] for v in range(3) for r in records]


def _ddp_cached_worker(rank: int, init_file: str, model_dir: str, out_dir: str) -> None:
    with gloo_group(rank, init_file):
        enc = float64_encoder(model_dir, dropout=False)
        model = nn.parallel.DistributedDataParallel(enc)
        loss_fn = build_loss("infonce", temperature=0.05, hard_negative_weight=0.5)
        feats = enc.tokenize(_flat(TRIPLES[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH]), max_length=32)
        out, _ = cached_embed_and_backward(model, feats, 3, loss_fn, DDP_CHUNK, autocast=no_autocast)
        torch.save((out.total, grads_of(enc)), Path(out_dir) / f"rank{rank}.pt")


def test_cached_ddp_equals_single_process_uncached(model_dir: Path, tmp_path: Path) -> None:
    ranks: list[Any] = run_workers(_ddp_cached_worker, model_dir, tmp_path)
    enc = float64_encoder(model_dir, dropout=False)
    loss_fn = build_loss("infonce", temperature=0.05, hard_negative_weight=0.5)
    with one_thread():
        z = enc(enc.tokenize(_flat(TRIPLES[: WORLD * LOCAL_BATCH]), max_length=32))
        ref = compute_loss(loss_fn, split_views(z, 3)).total
        ref.backward()
    ref_grads = grads_of(enc)
    for r, (loss, grads) in enumerate(ranks):
        torch.testing.assert_close(loss / WORLD, ref.detach().float(), rtol=1e-6, atol=1e-6)
        for n, g in ref_grads.items():
            torch.testing.assert_close(grads[n], g, rtol=1e-6, atol=1e-6, msg=prefixed(f"rank {r} {n}"))
