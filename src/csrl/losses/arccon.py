"""ArcCon (ArcCSE, Zhang et al., ACL 2022): InfoNCE with an additive angular margin on the positive."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csrl.losses._functional import (
    candidates,
    check_pair,
    check_positive,
    check_range,
    cross_cosine,
    diag_mask,
    safe_arccos,
)
from csrl.losses.registry import LossOutput, register_loss


def arccon_logits(s: Tensor, *, temperature: float, margin: float) -> Tensor:
    """Logits of ArcCon: S / temperature with the positive S_ii replaced by cos(arccos S_ii + margin).

    s: (B, M) anchor-view cosines, positives on the diagonal. The arccos argument is clamped to
    [-1 + 1e-6, 1 - 1e-6] so the gradient stays finite when a positive coincides with its anchor.
    """
    pos = diag_mask(s.shape[0], s.shape[1], s.device)
    penalised = torch.cos(safe_arccos(s) + margin)
    return torch.where(pos, penalised, s) / temperature


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
    logits = arccon_logits(s, temperature=temperature, margin=margin)
    labels = torch.arange(z1.shape[0], device=z1.device)
    loss = F.cross_entropy(logits, labels)
    return LossOutput(loss, {"arccon": loss.detach()})


@register_loss("arccon")
class ArcCon(nn.Module):
    """ArcCon with ``temperature`` (0.05) and additive angular ``margin`` u in radians (pi/18 = 10 degrees)."""

    def __init__(self, temperature: float = 0.05, margin: float = math.pi / 18) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        check_range("margin (radians)", margin, 0.0, math.pi / 2)
        self.temperature = temperature
        self.margin = margin

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return arccon(z1, z2, hard_neg, temperature=self.temperature, margin=self.margin)
