"""ArcCon (ArcCSE, Zhang et al., ACL 2022): InfoNCE with an additive angular margin on the positive."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from csrl.losses._functional import (
    ClosedForm,
    candidates,
    check_pair,
    check_positive,
    check_range,
    cross_cosine,
    diag_mask,
    diagonal_cross_entropy,
    safe_arccos,
)
from csrl.losses.infonce import softmax_closed_form
from csrl.losses.registry import Loss, LossOutput, register_loss


def arccon_positive(s: Tensor, margin: float) -> Tensor:
    """cos(arccos s + margin): the penalised cosine of a positive; arccos argument clamped to [-1 + 1e-6, 1 - 1e-6]."""
    return torch.cos(safe_arccos(s) + margin)


def arccon_ratio(s_pos: Tensor, margin: float) -> Tensor:
    """R = sin(theta_ii' + u) / sin(theta_ii'), theta = arccos s_pos (clamped as :func:`arccon_positive`)."""
    theta = safe_arccos(s_pos)
    return torch.sin(theta + margin) / torch.sin(theta)


def arccon_logits(s: Tensor, *, temperature: float, margin: float) -> Tensor:
    """Logits of ArcCon: S / temperature with the positive S_ii replaced by cos(arccos S_ii + margin).

    s: (B, M) anchor-view cosines, positives on the diagonal. The arccos argument is clamped to
    [-1 + 1e-6, 1 - 1e-6] so the gradient stays finite when a positive coincides with its anchor.
    """
    pos = diag_mask(s.shape[0], s.shape[1], s.device)
    return torch.where(pos, arccon_positive(s, margin), s) / temperature


def arccon(
    z1: Tensor,
    z2: Tensor,
    hard_neg: Tensor | None = None,
    *,
    temperature: float = 0.05,
    margin: float = math.pi / 18,
) -> LossOutput:
    """L_i = -log( e^{cos(theta_ii' + u)/tau} / (e^{cos(theta_ii' + u)/tau} + sum_{j != i} e^{s_ij'/tau}) ).

    Mean over anchors i; u = ``margin`` (radians, default 10 degrees), tau = ``temperature``.
    z1, z2, hard_neg: (batch, dim); hard negatives are extra columns. Gradient (papers.md 1.3):
    dL_i/dh_i = (1/tau) GD_i sum_{j != i} W_ij (h_j' - R_i h_i') with GD = 1 - P_ii',
    W = softmax_{j != i}(s/tau), R = sin(theta_ii' + u) / sin(theta_ii').
    Relations: ``margin=0`` is InfoNCE; MAT puts a margin on angles with a hinge instead of a softmax.
    """
    check_pair(z1, z2, hard_neg, name="arccon")
    s = cross_cosine(z1, candidates(z2, hard_neg))
    loss = diagonal_cross_entropy(arccon_logits(s, temperature=temperature, margin=margin))
    return LossOutput(loss, {"arccon": loss.detach()})


@register_loss("arccon")
class ArcCon(Loss):
    """ArcCon with ``temperature`` (0.05) and additive angular ``margin`` u in radians (pi/18 = 10 degrees)."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    paper_defaults: ClassVar[Mapping[str, Any]] = {"temperature": 0.05, "margin": math.pi / 18}

    def __init__(self, temperature: float = 0.05, margin: float = math.pi / 18) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        check_range("margin (radians)", margin, 0.0, math.pi / 2)
        self.temperature = temperature
        self.margin = margin

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return arccon(z1, z2, hard_neg, temperature=self.temperature, margin=self.margin)

    def paradigm_closed_form(self, s: Tensor) -> ClosedForm:
        """GD = 1 - P_ii' with the margin logit, W = softmax_{j != i}(s/tau), R = :func:`arccon_ratio`."""
        logits = arccon_logits(s, temperature=self.temperature, margin=self.margin)
        return softmax_closed_form(logits, arccon_ratio(s.diagonal(), self.margin))

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c = 1/tau."""
        return cos.new_full((cos.shape[0],), 1.0 / self.temperature)
