"""Distributed training is exact: gathered losses on shards give the single-process full-batch gradient.

Two levels:

- faked collectives (no processes): ``compute_loss`` on one rank's shard, with ``all_gather`` answered from
  the full batch, equals ``world_size`` times the full-batch loss, and its gradient is ``world_size`` times
  the matching rows of the full-batch gradient. Hard negatives must stay aligned with their anchors: the
  trap fixed in sentence-transformers PR 3453, where gathering ``[positives; hard negatives]`` as one
  block per rank moves every rank's positives away from the label columns;
- real DDP (2 gloo processes, CPU, float64, dropout off): the trainer's path (DDP-wrapped ``Encoder``,
  local shard, ``compute_loss(loss_fn, split_views(z, n_views))``, backward, DDP's all-reduce mean) gives
  parameter gradients equal to one process on the concatenated batch, for every registered objective.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from ddp_helpers import WORLD, FakeDist, float64_encoder, gloo_group, one_thread, prefixed, run_workers
from torch import Tensor, nn

import csrl.train.distributed as csrl_dist
from csrl.losses import build_loss, loss_class, loss_names, loss_traits
from csrl.models.encoder import Encoder
from csrl.train.step import Views, compute_loss, split_views

LOCAL_BATCH = 4

# (anchor, positive, hard negative); lengths vary so each rank pads to a different width.
RECORDS = [
    ("a man is playing a guitar", "a person plays the guitar on stage", "a woman is slicing onions"),
    ("the cat sleeps", "a cat is asleep on the warm sofa", "the dog barks at the mailman"),
    ("children run across the green park", "kids are running in a park", "an old man reads"),
    ("stock prices fell sharply today", "markets dropped", "the recipe needs two eggs"),
    ("a plane is taking off", "an airplane departs from the runway at dawn", "a boat sinks"),
    ("she is cooking pasta in the kitchen", "a woman makes spaghetti", "he repairs his bicycle"),
    ("two dogs play in the snow", "dogs are playing outside in winter snow", "a cup of hot tea"),
    ("the senate passed the bill", "lawmakers approved the law", "the river floods every spring"),
]

# Parameter sets the registry cannot infer, merged over a loss's paper defaults: suffix -> (params, views or
# None for "3 if the loss accepts hard negatives, else 2"). A loss not listed runs once at its paper defaults.
CASE_OVERRIDES: dict[str, dict[str, tuple[dict[str, Any], int | None]]] = {
    "infonce": {"": ({}, 2), "-hn": ({"hard_negative_weight": math.log(2.0)}, 3)},
    **{
        name: {f"-{variant}": ({"variant": variant}, None) for variant in ("ori", "mod")}
        for name in ("mhe", "mhs", "barlowtwins", "vicreg")
    },
}


def registry_cases() -> dict[str, tuple[str, dict[str, Any], int]]:
    """Every built-in loss with in-batch negatives (``loss_traits``), with hard negatives (3 views)
    wherever it accepts them: case -> (loss, params, views)."""
    cases: dict[str, tuple[str, dict[str, Any], int]] = {}
    for name in loss_names():
        traits = loss_traits(name)
        if not traits.in_batch_negatives or not loss_class(name).__module__.startswith("csrl.losses."):
            continue  # test-only losses other modules may register are not part of the comparison
        default_views = 3 if traits.hard_negatives else 2
        at_paper_defaults = {"-hn" if traits.hard_negatives else "": ({}, None)}
        for suffix, (params, views) in CASE_OVERRIDES.get(name, at_paper_defaults).items():
            cases[name + suffix] = (name, {**traits.paper_defaults, **params}, views or default_views)
    return cases


# Every registered objective, with hard negatives (3 views) wherever the loss accepts them.
CASES: dict[str, tuple[str, dict[str, Any], int]] = registry_cases()


def flat_texts(records: list[tuple[str, str, str]], n_views: int) -> list[str]:
    """The trainer's layout: all anchors, then all positives, then all hard negatives."""
    return [r[v] for v in range(n_views) for r in records]


def embed(model: nn.Module, enc: Encoder, records: list[tuple[str, str, str]], n_views: int) -> Tensor:
    features = enc.tokenize(flat_texts(records, n_views), max_length=32)
    out: Tensor = model(features)
    return out


def step_grads(
    model: nn.Module, enc: Encoder, records: list[tuple[str, str, str]], case: str
) -> tuple[Tensor, dict[str, Tensor]]:
    """One trainer step (no optimizer): embed, compute_loss (gathers when distributed), backward."""
    name, params, n_views = CASES[case]
    loss_fn = build_loss(name, **params)
    enc.zero_grad(set_to_none=True)
    z = embed(model, enc, records, n_views)
    out = compute_loss(loss_fn, split_views(z, n_views))
    out.total.backward()
    grads = {n: p.grad.detach().clone() for n, p in enc.named_parameters() if p.grad is not None}
    return out.total.detach(), grads


def _views(seed: int, batch: int, dim: int = 16) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    z2 = z1 + 0.3 * torch.randn(batch, dim, generator=g, dtype=torch.float64)  # positives near anchors
    hn = z1 + 0.6 * torch.randn(batch, dim, generator=g, dtype=torch.float64)  # hard negatives farther
    return z1, z2, hn


HN_LOSSES = {
    "infonce": {"temperature": 0.05},
    "infonce-weighted": {"temperature": 0.05, "hard_negative_weight": math.log(3.0)},
    "arccon": {},
    "mpt": {"margin": 0.5},
    "met": {"margin": 0.8},
    "mat": {"margin": 0.6},
}


@pytest.mark.parametrize("case", sorted(HN_LOSSES))
def test_fake_gather_keeps_hard_negatives_aligned(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = case.split("-")[0]
    loss_fn = build_loss(name, **HN_LOSSES[case])
    full = [t.requires_grad_(True) for t in _views(0, WORLD * LOCAL_BATCH)]
    ref = loss_fn(*full).total
    ref_grads = torch.autograd.grad(ref, full)
    assert all(g.abs().sum() > 0 for g in ref_grads)  # every view matters, so misalignment would show

    for r in range(WORLD):
        fake = FakeDist(r, WORLD, full)
        monkeypatch.setattr(csrl_dist, "dist", fake)
        rows = slice(r * LOCAL_BATCH, (r + 1) * LOCAL_BATCH)
        local = [f.detach()[rows].clone().requires_grad_(True) for f in full]
        out = compute_loss(loss_fn, Views(*local))
        assert fake.calls == 3  # anchors, positives and hard negatives are gathered one by one
        torch.testing.assert_close(out.total, WORLD * ref.detach(), rtol=1e-12, atol=1e-12)
        grads = torch.autograd.grad(out.total, local)
        for g, full_g in zip(grads, ref_grads, strict=True):
            # rank r's rows of the full gradient, scaled by the world size (DDP then averages)
            torch.testing.assert_close(g / WORLD, full_g[rows], rtol=1e-10, atol=1e-12)


def test_fake_gather_catches_the_block_gathering_trap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Negative control: gathering ``[positives; hard negatives]`` per rank as one block (PR 3453's bug)
    puts rank 1's positives at columns 2B..3B while the labels say B..2B; the loss changes."""
    from csrl.losses.infonce import info_nce

    z1, z2, hn = _views(1, WORLD * LOCAL_BATCH)
    ref = info_nce(z1, z2, hn, temperature=0.05).total
    blocks = [torch.cat([z2.chunk(WORLD)[r], hn.chunk(WORLD)[r]]) for r in range(WORLD)]
    block_full = torch.cat(blocks)  # what the trap gathers: [z2_0; hn_0; z2_1; hn_1]
    monkeypatch.setattr(csrl_dist, "dist", FakeDist(1, WORLD, [z1, block_full]))
    rows = slice(LOCAL_BATCH, 2 * LOCAL_BATCH)
    g1 = csrl_dist.all_gather_with_grad(z1[rows])
    cands = csrl_dist.all_gather_with_grad(blocks[1])
    labels = torch.arange(g1.shape[0])
    wrong = nn.functional.cross_entropy(
        nn.functional.normalize(g1, dim=-1) @ nn.functional.normalize(cands, dim=-1).T / 0.05, labels
    )
    assert not torch.isclose(wrong, ref, rtol=1e-3)
    # csrl's Views.gathered() gathers each view separately, so it matches the full batch
    full = [z1, z2, hn]
    monkeypatch.setattr(csrl_dist, "dist", FakeDist(1, WORLD, full))
    out = compute_loss(build_loss("infonce", temperature=0.05), Views(*(f[rows] for f in full)))
    torch.testing.assert_close(out.total, WORLD * ref, rtol=1e-12, atol=1e-12)


def test_collectives_are_identities_without_a_process_group() -> None:
    x = torch.randn(3, 4)
    assert csrl_dist.world_size() == 1 and csrl_dist.rank() == 0 and csrl_dist.is_main_process()
    assert csrl_dist.all_gather_with_grad(x) is x
    assert csrl_dist.all_reduce_mean(x) is x


# ----------------------------------------------------------------------------- real DDP, 2 gloo processes
def _ddp_worker(rank: int, init_file: str, model_dir: str, out_dir: str) -> None:
    with gloo_group(rank, init_file):
        enc = float64_encoder(model_dir)
        model = nn.parallel.DistributedDataParallel(enc)
        shard = RECORDS[rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH]
        results = {case: step_grads(model, enc, shard, case) for case in CASES}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def test_ddp_gradients_equal_single_process_full_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    ranks: list[Any] = run_workers(_ddp_worker, tiny_model_dir, tmp_path)
    enc = float64_encoder(tiny_model_dir)
    for case in CASES:
        with one_thread():
            loss, grads = step_grads(enc, enc, RECORDS[: WORLD * LOCAL_BATCH], case)
        assert sum(float(g.abs().sum()) for g in grads.values()) > 0, case
        for r, res in enumerate(ranks):
            d_loss, d_grads = res[case]
            torch.testing.assert_close(d_loss / WORLD, loss, rtol=1e-6, atol=1e-6, msg=prefixed(f"{case} rank {r}"))
            assert d_grads.keys() == grads.keys(), case
            for n, g in grads.items():
                torch.testing.assert_close(d_grads[n], g, rtol=1e-6, atol=1e-6, msg=prefixed(f"{case} rank {r} {n}"))
