"""Margin triplet losses with the hardest in-batch negative: MPT (cosine), MET (Euclidean), MAT (angle).

All three are hinges max(0, margin + pos_term - hardest_neg_term), mean over anchors. Candidates are the
rows of ``z2`` (the diagonal is the positive, excluded from the negatives by a boolean mask) followed,
when given, by the rows of ``hard_neg``, which all count as negatives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from csrl.losses._functional import (
    ClosedForm,
    candidates,
    check_pair,
    check_range,
    cross_cosine,
    diag_mask,
    met_distance,
    negatives_max,
    one_hot_hardest,
    safe_arccos,
    unit_scale,
)
from csrl.losses.registry import Loss, LossOutput, register_loss


def _hinge_hardest(score: Tensor, margin: float, *, larger_is_closer: bool) -> Tensor:
    """mean_i relu(margin + closeness(hardest negative) - closeness(positive)) for a (B, M) score matrix."""
    pos_mask = diag_mask(score.shape[0], score.shape[1], score.device)
    pos = score.diagonal()
    if larger_is_closer:  # similarity: hardest negative = largest off-diagonal score
        hardest = score.masked_fill(pos_mask, float("-inf")).amax(dim=1)
        return F.relu(hardest - pos + margin).mean()
    hardest = score.masked_fill(pos_mask, float("inf")).amin(dim=1)  # distance / angle: smallest
    return F.relu(pos - hardest + margin).mean()


# GD, R and the scale c of each hinge (papers.md 1.3), per anchor from its positive cosine s_pos and its
# hardest negative's cosine s_hard; the closed forms below and csrl.losses.simulate both call these.
def mpt_gd(s_pos: Tensor, s_hard: Tensor, margin: float) -> Tensor:
    """GD = 1[s_hard - s_pos + m > 0]: the MPT hinge is active."""
    return (s_hard - s_pos + margin > 0).to(s_pos.dtype)


def met_gd(s_pos: Tensor, s_hard: Tensor, margin: float) -> Tensor:
    """GD = 1[d_pos - d_hard + m > 0], d = :func:`~csrl.losses._functional.met_distance` of the cosine."""
    return (met_distance(s_pos) - met_distance(s_hard) + margin > 0).to(s_pos.dtype)


def met_ratio(s_pos: Tensor, s_hard: Tensor) -> Tensor:
    """R = d_hard / d_pos."""
    return met_distance(s_hard) / met_distance(s_pos)


def mat_gd(s_pos: Tensor, s_hard: Tensor, margin: float) -> Tensor:
    """GD = 1[theta_pos - theta_hard + m > 0], theta = arccos (clamped)."""
    return (safe_arccos(s_pos) - safe_arccos(s_hard) + margin > 0).to(s_pos.dtype)


def mat_ratio(s_pos: Tensor, s_hard: Tensor) -> Tensor:
    """R = sin theta_hard / sin theta_pos."""
    return torch.sin(safe_arccos(s_hard)) / torch.sin(safe_arccos(s_pos))


def mpt(z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, *, margin: float = 0.23) -> LossOutput:
    """MPT: L_i = max(0, max_{j != i} s_ij' - s_ii' + m), mean over anchors; m = ``margin`` (0.23).

    z1, z2, hard_neg: (batch, dim). Gradient: GD = 1[s_ii' - max_j s_ij' < m], W one-hot on the hardest
    negative, R = 1, scale 1. Relations: the tau -> 0 limit of InfoNCE's W with a hard GD switch.
    """
    check_pair(z1, z2, hard_neg, name="mpt")
    s = cross_cosine(z1, candidates(z2, hard_neg))
    loss = _hinge_hardest(s, margin, larger_is_closer=True)
    return LossOutput(loss, {"mpt": loss.detach()})


def met(z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, *, margin: float = 0.45) -> LossOutput:
    """MET: L_i = max(0, d_ii' - min_{j != i} d_ij' + m), d = sqrt(clamp_min(2 - 2 s, 1e-4)); m = 0.45.

    z1, z2, hard_neg: (batch, dim). Since dd/ds = -1/d, the anchor gradient is
    dL_i/dh_i = (1/d_ij*') GD_i (h_j*' - R_i h_i') with GD = 1[d_ij*' - d_ii' < m] and R = d_ij*'/d_ii'.
    """
    check_pair(z1, z2, hard_neg, name="met")
    d = met_distance(cross_cosine(z1, candidates(z2, hard_neg)))
    loss = _hinge_hardest(d, margin, larger_is_closer=False)
    return LossOutput(loss, {"met": loss.detach()})


def mat(z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, *, margin: float = 0.15 * math.pi) -> LossOutput:
    """MAT: L_i = max(0, theta_ii' - min_{j != i} theta_ij' + m), theta = arccos s; m = 0.15 pi.

    z1, z2, hard_neg: (batch, dim). Since dtheta/ds = -1/sin(theta), the anchor gradient is
    dL_i/dh_i = (1/sin theta_ij*') GD_i (h_j*' - R_i h_i'), R = sin theta_ij*' / sin theta_ii'.
    Cosines are clamped to [-1 + 1e-6, 1 - 1e-6] before arccos.
    """
    check_pair(z1, z2, hard_neg, name="mat")
    theta = safe_arccos(cross_cosine(z1, candidates(z2, hard_neg)))
    loss = _hinge_hardest(theta, margin, larger_is_closer=False)
    return LossOutput(loss, {"mat": loss.detach()})


@register_loss("mpt")
class MPT(Loss):
    """Margin triplet on cosines with the hardest negative; ``margin`` in [0, 2] (0.23)."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    paper_defaults: ClassVar[Mapping[str, Any]] = {"margin": 0.23}

    def __init__(self, margin: float = 0.23) -> None:
        super().__init__()
        check_range("margin", margin, 0.0, 2.0)
        self.margin = margin

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return mpt(z1, z2, hard_neg, margin=self.margin)

    def paradigm_closed_form(self, s: Tensor) -> ClosedForm:
        """GD = :func:`mpt_gd`, W one-hot on the hardest negative, R = 1."""
        s_pos = s.diagonal()
        return ClosedForm(mpt_gd(s_pos, negatives_max(s), self.margin), one_hot_hardest(s), torch.ones_like(s_pos))

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c = 1."""
        return unit_scale(cos)


@register_loss("met")
class MET(Loss):
    """Margin triplet on Euclidean distances of normalised vectors; ``margin`` in [0, 2] (0.45)."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    paper_defaults: ClassVar[Mapping[str, Any]] = {"margin": 0.45}

    def __init__(self, margin: float = 0.45) -> None:
        super().__init__()
        check_range("margin", margin, 0.0, 2.0)
        self.margin = margin

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return met(z1, z2, hard_neg, margin=self.margin)

    def paradigm_closed_form(self, s: Tensor) -> ClosedForm:
        """GD = :func:`met_gd`, W one-hot on the hardest negative, R = :func:`met_ratio`."""
        s_pos, s_hard = s.diagonal(), negatives_max(s)
        return ClosedForm(met_gd(s_pos, s_hard, self.margin), one_hot_hardest(s), met_ratio(s_pos, s_hard))

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c = 1/d_hard (dd/ds = -1/d)."""
        return 1.0 / met_distance(negatives_max(cos))


@register_loss("mat")
class MAT(Loss):
    """Margin triplet on angles; ``margin`` in radians, in [0, pi] (0.15 pi)."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    paper_defaults: ClassVar[Mapping[str, Any]] = {"margin": 0.15 * math.pi}

    def __init__(self, margin: float = 0.15 * math.pi) -> None:
        super().__init__()
        check_range("margin (radians)", margin, 0.0, math.pi)
        self.margin = margin

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return mat(z1, z2, hard_neg, margin=self.margin)

    def paradigm_closed_form(self, s: Tensor) -> ClosedForm:
        """GD = :func:`mat_gd`, W one-hot on the hardest negative, R = :func:`mat_ratio`."""
        s_pos, s_hard = s.diagonal(), negatives_max(s)
        return ClosedForm(mat_gd(s_pos, s_hard, self.margin), one_hot_hardest(s), mat_ratio(s_pos, s_hard))

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c = 1/sin theta_hard (dtheta/ds = -1/sin theta)."""
        return 1.0 / torch.sin(safe_arccos(negatives_max(cos)))
