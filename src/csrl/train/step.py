"""The training step, split at the seam every extension plugs into:

``embed(batch) -> Views`` (one forward over all views) -> ``loss(views) -> LossOutput`` -> backward.

:func:`embed_and_backward` is the plain step: one forward over the concatenated views, the loss on the
(gathered) global batch, one backward. :func:`cached_embed_and_backward` is the GradCache variant: embed
in chunks without a graph, compute the loss and the embedding gradients on the full batch, then
re-encode each chunk with a graph (replaying its dropout RNG state) and back-propagate the cached
gradient. Both return ``(LossOutput, Views)`` and leave the parameter gradients for the optimizer, without
reading anything back from the device: a non-finite loss is back-propagated like any other, and the
trainer's guard (:mod:`csrl.train.guard`) drops that step's update on the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from csrl.losses.registry import LossOutput
from csrl.train import distributed as dist


@dataclass
class Views:
    """Embeddings of one batch: anchors, positives, optional hard negatives (each (B, D); NLI's hard negatives, or
    SNCSE's soft negatives, the negated sentences of ``TrainingData.negation_view``); and the inputs some
    methods add (:mod:`csrl.train.methods`): ``clean``, SimCSE++'s dropout-free embeddings of the anchors'
    sentences (B, D), and ``queue``, ESimCSE's momentum queue (M, D): negatives shared by every anchor, already
    global, without gradient; and what the records carry: ``scores`` (B,), the gold scores of scored pairs
    (:meth:`csrl.train.batches.TrainingData.gold`; CoSENT, AnglE), gathered like the rows they score."""

    z1: Tensor
    z2: Tensor
    hard_neg: Tensor | None = None
    clean: Tensor | None = None
    queue: Tensor | None = None
    scores: Tensor | None = None

    def gathered(self) -> Views:
        """All ranks' rows (this rank's still in the graph); identity on one process. The queue is already global."""
        hn = dist.all_gather_with_grad(self.hard_neg) if self.hard_neg is not None else None
        clean = dist.all_gather_with_grad(self.clean) if self.clean is not None else None
        scores = dist.all_gather_with_grad(self.scores) if self.scores is not None else None
        z1, z2 = dist.all_gather_with_grad(self.z1), dist.all_gather_with_grad(self.z2)
        return Views(z1, z2, hn, clean, self.queue, scores)

    def extras(self) -> dict[str, Tensor]:
        """The optional loss inputs beyond ``(z1, z2, hard_neg)``, as the loss's keyword arguments."""
        named = (("clean", self.clean), ("queue", self.queue), ("scores", self.scores))
        return {k: v for k, v in named if v is not None}


def split_views(z: Tensor, n_views: int) -> Views:
    chunks = z.chunk(n_views, dim=0)
    return Views(chunks[0], chunks[1], chunks[2] if n_views == 3 else None)


def compute_loss(loss_fn: nn.Module, views: Views) -> LossOutput:
    """Loss on the global batch, scaled by the world size so DDP's gradient mean is the exact gradient."""
    g = views.gathered()
    out: LossOutput = loss_fn(g.z1, g.z2, g.hard_neg, **g.extras())
    scale = dist.world_size()
    if scale != 1:
        out = LossOutput(out.total * scale, out.terms)
    return out


def _identity(t: Tensor) -> Tensor:
    return t


def embed_and_backward(
    encoder: nn.Module,
    features: dict[str, Tensor],
    n_views: int,
    loss_fn: nn.Module,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager[None]],
    scale: Callable[[Tensor], Tensor] = _identity,
    extra_loss: Callable[[], LossOutput] | None = None,
    extra_views: Callable[[], dict[str, Tensor]] | None = None,
    views_loss: Callable[[Views], LossOutput] | None = None,
) -> tuple[LossOutput, Views]:
    """One forward over the concatenated views, the loss, and its backward.

    ``scale`` is the fp16 loss scaler's ``scale`` (identity otherwise). ``extra_loss``, when given, is
    computed after the loss and added to it (total and terms) before the one backward pass (SimCSE's MLM
    auxiliary loss, :func:`csrl.train.mlm_aux.auxiliary_mlm_loss`). ``extra_views``, when given, is called
    after the forward and returns the loss's extra inputs (``clean``, ``queue``: :meth:`Views.extras`,
    :meth:`csrl.train.methods.Method.extra_views`). ``views_loss``, when given, is computed from this rank's
    views (in the graph) and added like ``extra_loss`` (DiffCSE's conditional RTD loss,
    :func:`csrl.train.diffcse.diffcse_rtd_loss`). The returned views still carry their graph; callers that
    keep them detach them.
    """
    with autocast():
        z = encoder(features)
    views = split_views(z.float(), n_views)
    if extra_views is not None:
        views = dataclasses.replace(views, **extra_views())
    out = compute_loss(loss_fn, views)
    if extra_loss is not None:
        extra = extra_loss()
        out = LossOutput(out.total + extra.total, {**out.terms, **extra.terms})
    if views_loss is not None:
        conditioned = views_loss(views)
        out = LossOutput(out.total + conditioned.total, {**out.terms, **conditioned.terms})
    scale(out.total).backward()  # also when non-finite: the guard drops the update on the device (no host read)
    return out, views


def grads_finite(params: Sequence[Tensor]) -> bool:
    """True iff every gradient entry is finite: the largest |g| (NaN propagates through the max) is finite.

    One read of each gradient and no boolean masks: about half the time of ``isfinite(g).all()`` per
    tensor (~36 ms against ~63 ms per step for MiniLM on 2 CPU cores)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=math.inf, foreach=None)))


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def cached_embed_and_backward(
    encoder: nn.Module,
    features: dict[str, Tensor],
    n_views: int,
    loss_fn: nn.Module,
    chunk_size: int,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager[None]],
    scale: Callable[[Tensor], Tensor] = _identity,
    extra_views: Callable[[], dict[str, Tensor]] | None = None,
) -> tuple[LossOutput, Views]:
    """GradCache step over the concatenated views; returns the loss and the (detached) views.

    Each chunk's RNG state is recorded before its no-graph forward and restored before its re-forward,
    so dropout masks are identical in both passes; afterwards the RNG continues from where the first
    pass left it. Parameter gradients equal those of an uncached step using the same per-chunk masks.
    ``extra_views``: loss inputs that need no forward of their own (the ``scores`` of scored pairs).
    """
    rows = features["input_ids"].shape[0]
    device = features["input_ids"].device
    starts = list(range(0, rows, chunk_size))
    states, reps = [], []
    with torch.no_grad():
        for s in starts:
            states.append(_rng_state(device))
            chunk = {k: v[s : s + chunk_size] for k, v in features.items()}
            with autocast():
                reps.append(encoder(chunk).float())
    end_state = _rng_state(device)
    z = torch.cat(reps).detach().requires_grad_(True)
    extras = extra_views() if extra_views is not None else {}
    out = compute_loss(loss_fn, dataclasses.replace(split_views(z, n_views), **extras))
    (grad,) = torch.autograd.grad(scale(out.total), z)
    no_sync = getattr(encoder, "no_sync", None)  # DDP: all-reduce once, after the last chunk
    for n, (s, state) in enumerate(zip(starts, states, strict=True)):
        _set_rng_state(state, device)
        chunk = {k: v[s : s + chunk_size] for k, v in features.items()}
        sync = no_sync() if no_sync is not None and n < len(starts) - 1 else contextlib.nullcontext()
        with sync:
            with autocast():
                rep = encoder(chunk).float()
            rep.backward(grad[s : s + chunk_size])
    _set_rng_state(end_state, device)
    return LossOutput(out.total.detach(), out.terms), dataclasses.replace(split_views(z.detach(), n_views), **extras)
