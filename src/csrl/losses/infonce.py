"""InfoNCE / NT-Xent, the SimCSE objective (unsupervised and supervised with hard negatives)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csrl.losses._functional import candidates, check_pair, check_positive, cross_cosine
from csrl.losses.registry import LossOutput, register_loss


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """(n, m) matrix of cosines between rows of ``a`` and rows of ``b`` (not recorded by the paradigm hook)."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def info_nce_logits(
    z1: Tensor, z2: Tensor, hard_neg: Tensor | None, *, temperature: float, hard_negative_weight: float
) -> Tensor:
    """Logits S_ij / temperature, (B, B) or (B, 2B) with hard negatives; anchor i's own hard negative
    (column B + i) gets ``hard_negative_weight`` added."""
    logits = cross_cosine(z1, candidates(z2, hard_neg)) / temperature
    if hard_neg is not None and hard_negative_weight != 0.0:
        n = z1.shape[0]
        own_hn = torch.zeros_like(logits, dtype=torch.bool)
        own_hn[:, n:] = torch.eye(n, dtype=torch.bool, device=z1.device)
        logits = logits + own_hn.to(logits.dtype) * hard_negative_weight
    return logits


def info_nce(
    z1: Tensor,
    z2: Tensor,
    hard_neg: Tensor | None = None,
    *,
    temperature: float = 0.05,
    hard_negative_weight: float = 0.0,
) -> LossOutput:
    """L_i = -log softmax_j(cos(z1_i, c_j) / temperature)[i], mean over anchors i.

    Candidates ``c`` are the rows of ``z2`` followed, when given, by the rows of ``hard_neg``.
    ``hard_negative_weight`` is SimCSE's additive term on the logit of anchor i's own hard negative
    (``log`` of a multiplicative weight; default 0 leaves it unweighted).

    z1, z2, hard_neg: (batch, dim). Gradient (papers.md 1.3): dL_i/dh_i = (1/tau) (1 - P_ii')
    sum_{j != i} W_ij (h_j' - h_i'), W = softmax_{j != i}, i.e. GD = 1 - P_ii', R = 1.
    Relations: ArcCon adds an angular margin to the positive; MPT keeps only the hardest negative,
    with a margin. Equals sentence-transformers' MultipleNegativesRankingLoss with scale = 1/temperature.
    """
    check_pair(z1, z2, hard_neg, name="infonce")
    logits = info_nce_logits(z1, z2, hard_neg, temperature=temperature, hard_negative_weight=hard_negative_weight)
    labels = torch.arange(z1.shape[0], device=z1.device)
    loss = F.cross_entropy(logits, labels)
    return LossOutput(loss, {"infonce": loss.detach()})


@register_loss("infonce")
class InfoNCE(nn.Module):
    """InfoNCE with temperature ``temperature`` (SimCSE: 0.05) and SimCSE's ``hard_negative_weight``."""

    def __init__(self, temperature: float = 0.05, hard_negative_weight: float = 0.0) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        if not math.isfinite(hard_negative_weight):
            raise ValueError(f"hard_negative_weight must be finite, got {hard_negative_weight}")
        self.temperature = temperature
        self.hard_negative_weight = hard_negative_weight

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return info_nce(z1, z2, hard_neg, temperature=self.temperature, hard_negative_weight=self.hard_negative_weight)
