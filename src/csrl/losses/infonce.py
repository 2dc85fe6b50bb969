"""InfoNCE / NT-Xent, the SimCSE objective (unsupervised and supervised with hard negatives)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from csrl.losses.registry import LossOutput, register_loss


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """(n, m) matrix of cosines between rows of ``a`` and rows of ``b``."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


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

    z1, z2, hard_neg: (batch, dim). Relations: ArcCon adds an angular margin to the positive; MPT keeps
    only the hardest negative, with a margin. Equals sentence-transformers' MultipleNegativesRankingLoss
    with scale = 1/temperature.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    cands = z2 if hard_neg is None else torch.cat([z2, hard_neg], dim=0)
    logits = cosine_matrix(z1, cands) / temperature
    if hard_neg is not None and hard_negative_weight != 0.0:
        n = z1.shape[0]
        bonus = torch.zeros_like(logits)
        idx = torch.arange(n, device=z1.device)
        bonus[idx, n + idx] = hard_negative_weight
        logits = logits + bonus
    labels = torch.arange(z1.shape[0], device=z1.device)
    loss = F.cross_entropy(logits, labels)
    return LossOutput(loss, {"infonce": loss.detach()})


@register_loss("infonce")
class InfoNCE(nn.Module):
    """InfoNCE with temperature ``temperature`` (SimCSE: 0.05)."""

    def __init__(self, temperature: float = 0.05, hard_negative_weight: float = 0.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.hard_negative_weight = hard_negative_weight

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return info_nce(
            z1, z2, hard_neg, temperature=self.temperature, hard_negative_weight=self.hard_negative_weight
        )
