"""Paper B's unified gradient paradigm (papers.md 1.3): GD, W and R, in closed form and read off autograd.

For the anchor h_i = z1_i / ||z1_i|| (view 0), every loss here has

    dL/dz1_i = (1/B) (1/||z1_i||) (I - h_i h_i^T) c_i GD_i [ sum_{j != i} W_ij x_j - R_i h_i' ]

where the x_j are the negatives (cross-view candidates h_j', then same-view h_k where a loss uses them),
W_i is a distribution over them (sum 1), R_i the pull-to-push ratio and c_i a scale:

| loss      | c_i            | GD_i                           | W_ij              | R_i                      |
|-----------|----------------|--------------------------------|-------------------|--------------------------|
| infonce   | 1/tau          | 1 - P_ii'                      | softmax_{j!=i}(s/tau) | 1                    |
| arccon    | 1/tau          | 1 - P_ii' (margin logit)       | softmax_{j!=i}(s/tau) | sin(th_ii'+u)/sin th_ii' |
| mpt       | 1              | 1[s_ij*' - s_ii' + m > 0]      | one-hot j*        | 1                        |
| met       | 1/d_ij*'       | 1[d_ii' - d_ij*' + m > 0]      | one-hot j*        | d_ij*'/d_ii'             |
| mat       | 1/sin th_ij*'  | 1[th_ii' - th_ij*' + m > 0]    | one-hot j*        | sin th_ij*'/sin th_ii'   |
| surrogate | 1              | 1[s_ii' - s_ij*' < m]          | chosen W          | ratio                    |

(th = theta = arccos s; j* = hardest negative = argmax_{j != i} s_ij'; the MET and MAT scales come from dd/ds = -1/d and
dtheta/ds = -1/sin theta; the 1/B is the batch mean; the projection and 1/||z1_i|| are the Jacobian of
the normalisation.) :func:`closed_form` evaluates the table; :func:`effective_decomposition` reads the
same quantities off autograd for any loss; :func:`step_stats` summarises them for the training log.

Each row lives with its loss: a loss with a closed form defines ``paradigm_closed_form(s) -> ClosedForm``
(GD, W, R from the (B, M) anchor-view cosines ``s``, positives on the diagonal) and ``gd_scale(cos)``
(c_i); :func:`closed_form` and :func:`gd_scale` call them, so this module names no loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csrl.losses._functional import (
    ClosedForm,
    Recorded,
    candidates,
    diag_mask,
    hardest_negative,
    record_similarities,
    safe_arccos,
)

ACTIVE_THRESHOLD = 1e-3
"""An anchor is *active* when its normalised GD_i exceeds this (GD_i is relative to the full-strength
gradient c_i; for losses without a known scale, c_i = 1 and the raw value is compared)."""


@dataclass
class Decomposition:
    """Per-anchor GD, W, R of a batch (all detached). B anchors, M cross-view candidates.

    gd: (B,) GD_i = gd_raw_i / scale_i. gd_raw: (B,) B * (sum of dL/dS over anchor i's negatives).
    scale: (B,) c_i. w_cross: (B, M) W over cross-view candidates (zero at the positive j = i).
    w_same: (B, B) W over same-view rows (zero diagonal); all zero for losses without them.
    r: (B,) R_i. cos: (B, M) cross-view cosines. other_share: (B,) ||part of dL/dz1_i not carried by any
    recorded similarity|| / ||dL/dz1_i|| (NaN in closed forms). In effective decompositions W and R
    are NaN where gd_raw = 0 (no gradient to decompose).
    """

    gd: Tensor
    gd_raw: Tensor
    scale: Tensor
    w_cross: Tensor
    w_same: Tensor
    r: Tensor
    cos: Tensor
    other_share: Tensor
    note: str = ""


def _rows_normalised(z1: Tensor, z2: Tensor, hard_neg: Tensor | None) -> tuple[Tensor, Tensor]:
    return F.normalize(z1, dim=-1), F.normalize(candidates(z2, hard_neg), dim=-1)


def gd_scale(loss: nn.Module, cos: Tensor) -> Tensor:
    """c_i of the table, (B,), from cross-view cosines ``cos`` (B, M): the loss's own ``gd_scale(cos)``
    where it declares one, ones otherwise."""
    declared: Callable[[Tensor], Tensor] | None = getattr(loss, "gd_scale", None)
    return cos.new_ones(cos.shape[0]) if declared is None else declared(cos)


def closed_form(loss: nn.Module, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> Decomposition:
    """GD, W, R, c of the module docstring's table, from the loss's ``paradigm_closed_form`` and ``gd_scale``
    (infonce, arccon, mpt, met, mat and surrogate: ``loss_traits(name).has_closed_form``).

    z1, z2, hard_neg: (B, D) as passed to the loss. Raises ``TypeError`` for other losses (use
    :func:`effective_decomposition`).
    """
    form: Callable[[Tensor], ClosedForm] | None = getattr(loss, "paradigm_closed_form", None)
    if form is None:
        raise TypeError(f"no closed form for {type(loss).__name__}; use effective_decomposition")
    with torch.no_grad():
        h, c = _rows_normalised(z1, z2, hard_neg)
        s = h @ c.T
        gd, w, r = form(s)
        scale = gd_scale(loss, s)
        nan = torch.full_like(gd, float("nan"))
        return Decomposition(gd, gd * scale, scale, w, s.new_zeros(s.shape[0], s.shape[0]), r, s, nan)


def paradigm_gradient(dec: Decomposition, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> Tensor:
    """dL/dz1 rebuilt from a decomposition: (1/B) (1/||z1_i||) P_i c_i GD_i [W x - R_i h_i'], (B, D).

    Anchors with GD_i = 0 get zero. Does not include the ``other`` part of an effective decomposition.
    """
    h, c = _rows_normalised(z1, z2, hard_neg)
    n = h.shape[0]
    w_cross = torch.nan_to_num(dec.w_cross)
    w_same = torch.nan_to_num(dec.w_same)
    r = torch.nan_to_num(dec.r)
    push = w_cross @ c + w_same @ h
    pull = r[:, None] * (w_cross.sum(1) + w_same.sum(1))[:, None] * c[:n]
    g_h = (dec.scale * dec.gd)[:, None] * (push - pull)
    tangent = g_h - (g_h * h).sum(dim=1, keepdim=True) * h
    return tangent / (z1.norm(dim=1, keepdim=True) * n)


def _row_flow(x: Tensor, z: Tensor) -> Tensor:
    """(B,) bool: does gradient flow from row i of ``x`` into ``z`` (False for detached or gated rows)?"""
    if not x.requires_grad:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    flow = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    # Two random probes: one alone could be radial for some row (then the normalisation kills it).
    gen = torch.Generator().manual_seed(2_024_022_9)
    for _ in range(2):
        probe = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        (g,) = torch.autograd.grad(x, z, grad_outputs=probe, retain_graph=True, allow_unused=True)
        if g is not None:
            flow |= g.abs().sum(dim=1) > 0
    return flow


def _coefficients(recs: list[Recorded], grads: list[Tensor], z: Tensor, n: int, m: int) -> tuple[Tensor, Tensor]:
    """Coefficient of each cross-view candidate (B, M) and same-view row (B, B) in dL/dh_i."""
    cross = z.new_zeros(n, m)
    same = z.new_zeros(n, n)
    for rec, g in zip(recs, grads, strict=True):
        if rec.pair == "01":
            cross[:, : g.shape[1]] += g * _row_flow(rec.rows, z)[:, None]
        elif rec.pair == "10":
            cross[:, : g.shape[0]] += g.T * _row_flow(rec.cols, z)[:, None]
        elif rec.pair == "00":
            same += g * _row_flow(rec.rows, z)[:, None] + g.T * _row_flow(rec.cols, z)[:, None]
    return cross, same.masked_fill(diag_mask(n, n, z.device), 0.0)


def effective_decomposition(loss: nn.Module, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> Decomposition:
    """GD, W, R read off autograd: G = dL/dS for every similarity matrix S the loss computes.

    The loss runs on detached copies (only ``z1`` requires grad) inside
    :func:`~csrl.losses._functional.record_similarities`. The coefficient of h_j' in dL/dh_i is
    G01_ij (rows view 0) + G10_ji (reverse direction), counted only where gradient reaches row i; same-view
    matrices give coefficients of h_k (both index positions). Then, with all entries multiplied by B
    to undo the batch mean: gd_raw_i = sum over negatives (cross j != i and same-view k != i),
    W = coefficient / gd_raw_i, R_i = -coefficient(h_i') / gd_raw_i, GD_i = gd_raw_i / c_i with
    c_i = :func:`gd_scale`. For infonce/arccon/mpt/met/mat/surrogate GD in [0, 1] equals the closed form.

    Reported separately: ``w_same`` (weight on same-view negatives: MHE uniformity, Barlow Twins/VICReg
    negatives) and ``other_share`` (gradient not carried by any recorded similarity, e.g. Barlow Twins'
    per-dimension ori positive, which then reads as R = 0). For losses whose W takes negative values
    (linear weights of the ori Barlow Twins / VICReg), W is a signed weighting, not a distribution.
    A loss that records no similarity gets NaN everywhere, with a ``note``.
    """
    with torch.enable_grad():
        z = z1.detach().clone().requires_grad_(True)
        z2d = z2.detach()
        hnd = None if hard_neg is None else hard_neg.detach()
        with record_similarities() as recs:
            total = loss(z, z2d, hnd).total
        h, c = _rows_normalised(z.detach(), z2d, hnd)
        cos = h @ c.T
        n, m = cos.shape
        live = [r for r in recs if r.s.requires_grad]
        if not total.requires_grad:
            nan = torch.full((n,), float("nan"), dtype=cos.dtype, device=cos.device)
            nanm = torch.full_like(cos, float("nan"))
            return Decomposition(nan, nan, nan, nanm, nan[:, None].expand(n, n), nan, cos, nan, "no gradient")
        *raw, full_or_none = torch.autograd.grad(
            total, [*(r.s for r in live), z], retain_graph=True, allow_unused=True
        )  # one backward pass for dL/dS of every recorded S and dL/dz1
        grads = [torch.zeros_like(r.s) if g is None else g for r, g in zip(live, raw, strict=True)]
        full = torch.zeros_like(z) if full_or_none is None else full_or_none
        carried = torch.zeros_like(z)
        if live:
            via = torch.autograd.grad([r.s for r in live], z, grad_outputs=grads, retain_graph=True, allow_unused=True)
            carried = carried if via[0] is None else via[0]
        cross, same = _coefficients(live, grads, z, n, m)
    cross, same = cross.detach() * n, same.detach() * n
    pos = diag_mask(n, m, cos.device)
    neg = cross.masked_fill(pos, 0.0)
    gd_raw = neg.sum(1) + same.sum(1) if live else torch.full((n,), float("nan"), dtype=cos.dtype, device=cos.device)
    safe = torch.where(gd_raw != 0, gd_raw, torch.full_like(gd_raw, float("nan")))
    scale = gd_scale(loss, cos)
    other = (full - carried).detach().norm(dim=1) / full.detach().norm(dim=1).clamp_min(1e-30)
    note = "" if live else "loss computes no recorded similarity: GD/W/R undefined"
    return Decomposition(
        gd=gd_raw / scale,
        gd_raw=gd_raw,
        scale=scale,
        w_cross=neg / safe[:, None],
        w_same=same / safe[:, None],
        r=-cross.diagonal() / safe,
        cos=cos,
        other_share=other,
        note=note,
    )


def _masked_nanmean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` over ``mask`` ignoring NaN, as a 0-d tensor (NaN when nothing is left): no boolean
    indexing, so no data-dependent shape and no host synchronisation."""
    keep = mask & ~torch.isnan(x)
    return torch.where(keep, x, torch.zeros_like(x)).sum() / keep.sum()


def step_stats_tensors(loss: nn.Module, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> dict[str, Tensor]:
    """:func:`step_stats` as 0-d tensors on the embeddings' device, without a host synchronisation: the
    trainer queues them at a logging step and reads them all at once later (:mod:`csrl.train.loop`)."""
    hn = None if hard_neg is None else hard_neg.detach().float()
    with torch.autocast(device_type=z1.device.type, enabled=False):  # full precision even inside autocast
        dec = effective_decomposition(loss, z1.detach().float(), z2.detach().float(), hn)
    n, m = dec.cos.shape
    active = dec.gd > ACTIVE_THRESHOLD
    everyone = torch.ones_like(active)
    hardest_w = torch.maximum(dec.w_cross.amax(1), dec.w_same.amax(1))
    theta = torch.rad2deg(safe_arccos(dec.cos))
    pos = diag_mask(n, m, dec.cos.device)
    rows = torch.arange(n, device=dec.cos.device)
    return {
        "paradigm/gd_mean": _masked_nanmean(dec.gd, everyone),
        "paradigm/active_share": active.float().mean(),
        "paradigm/w_hardest": _masked_nanmean(hardest_w, active),
        "paradigm/r_mean": _masked_nanmean(dec.r, active),
        "paradigm/same_view_share": _masked_nanmean(dec.w_same.sum(1), active),
        "paradigm/other_share": _masked_nanmean(dec.other_share, everyone),
        "paradigm/pos_angle_deg": theta.diagonal().mean(),
        "paradigm/neg_angle_deg": _masked_nanmean(theta, ~pos),
        "paradigm/hardest_neg_angle_deg": theta[rows, hardest_negative(dec.cos)].mean(),
    }


def step_stats(loss: nn.Module, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> dict[str, float]:
    """Training-log summary of :func:`effective_decomposition` on detached float32 copies (B x B cost).

    Keys: ``paradigm/gd_mean`` (mean GD), ``paradigm/active_share`` (share of anchors with
    GD > :data:`ACTIVE_THRESHOLD`), ``paradigm/w_hardest`` (mean over active anchors of max_j W_ij, over
    all negatives), ``paradigm/r_mean`` (mean R over active anchors), ``paradigm/same_view_share`` (mean
    W mass on same-view negatives, active anchors), ``paradigm/other_share`` (mean share of the gradient
    outside the paradigm), ``paradigm/pos_angle_deg`` (mean theta_ii'), ``paradigm/neg_angle_deg``
    (mean theta_ij' over all negatives, hard negatives included), ``paradigm/hardest_neg_angle_deg``.
    Means skip NaN entries; a mean over no anchor is NaN. Does not touch the training graph; runs in
    float32 with autocast disabled. One host read (:func:`step_stats_tensors` is the read-free form).
    """
    stats = step_stats_tensors(loss, z1, z2, hard_neg)
    values = torch.stack(list(stats.values())).tolist()
    return dict(zip(stats, values, strict=True))


__all__ = [
    "ACTIVE_THRESHOLD",
    "Decomposition",
    "closed_form",
    "effective_decomposition",
    "gd_scale",
    "paradigm_gradient",
    "step_stats",
    "step_stats_tensors",
]
