"""InfoNCE / NT-Xent, the SimCSE objective (unsupervised and supervised with hard negatives)."""

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
    cross_cosine,
    diag_mask,
    diagonal_cross_entropy,
)
from csrl.losses.registry import Loss, LossOutput, register_loss


def info_nce_logits(s: Tensor, *, temperature: float, hard_negative_weight: float) -> Tensor:
    """Logits S_ij / temperature of the (B, B) or, with hard negatives, (B, 2B) anchor-view cosines ``s``;
    anchor i's own hard negative (column B + i) gets ``hard_negative_weight`` added."""
    logits = s / temperature
    n = s.shape[0]
    if s.shape[1] > n and hard_negative_weight != 0.0:
        own_hn = torch.zeros_like(logits, dtype=torch.bool)
        own_hn[:, n:] = torch.eye(n, dtype=torch.bool, device=s.device)
        logits = logits + own_hn.to(logits.dtype) * hard_negative_weight
    return logits


def info_nce_gd(pos_logit: Tensor, neg_lse: Tensor) -> Tensor:
    """GD = 1 - P_ii' = 1 / (1 + e^{pos_logit} / sum_{j != i} e^{neg logit_j}) = sigmoid(neg_lse - pos_logit).

    pos_logit: the positive's logit (s_ii'/tau; ArcCon: cos(theta_ii' + u)/tau); neg_lse: log sum_{j != i}
    e^{logit_ij}. Any matching shapes: one anchor per element (paradigm.closed_form, simulate's grids).
    """
    return torch.sigmoid(neg_lse - pos_logit)


def softmax_closed_form(logits: Tensor, r: Tensor) -> ClosedForm:
    """GD, W, R of a cross-entropy over ``logits`` (B, M) with the positive on the diagonal:
    GD = :func:`info_nce_gd`, W = softmax over the negatives j != i, R = ``r``."""
    pos = diag_mask(logits.shape[0], logits.shape[1], logits.device)
    neg = logits.masked_fill(pos, float("-inf"))
    gd = info_nce_gd(logits.diagonal(), torch.logsumexp(neg, dim=1))
    return ClosedForm(gd, torch.softmax(neg, dim=1), r)


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
    with a margin; CoSENT pools the same pairwise terms over the whole batch in one log.
    Equals sentence-transformers' MultipleNegativesRankingLoss with scale = 1/temperature.
    """
    check_pair(z1, z2, hard_neg, name="infonce")
    s = cross_cosine(z1, candidates(z2, hard_neg))
    logits = info_nce_logits(s, temperature=temperature, hard_negative_weight=hard_negative_weight)
    loss = diagonal_cross_entropy(logits)
    return LossOutput(loss, {"infonce": loss.detach()})


@register_loss("infonce")
class InfoNCE(Loss):
    """InfoNCE with temperature ``temperature`` (SimCSE: 0.05) and SimCSE's ``hard_negative_weight``."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    paper_defaults: ClassVar[Mapping[str, Any]] = {"temperature": 0.05}

    def __init__(self, temperature: float = 0.05, hard_negative_weight: float = 0.0) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        if not math.isfinite(hard_negative_weight):
            raise ValueError(f"hard_negative_weight must be finite, got {hard_negative_weight}")
        self.temperature = temperature
        self.hard_negative_weight = hard_negative_weight

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return info_nce(z1, z2, hard_neg, temperature=self.temperature, hard_negative_weight=self.hard_negative_weight)

    def paradigm_closed_form(self, s: Tensor) -> ClosedForm:
        """GD = 1 - P_ii', W = softmax_{j != i} of the logits, R = 1 (papers.md 1.3)."""
        logits = info_nce_logits(s, temperature=self.temperature, hard_negative_weight=self.hard_negative_weight)
        return softmax_closed_form(logits, torch.ones_like(s.diagonal()))

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c = 1/tau."""
        return cos.new_full((cos.shape[0],), 1.0 / self.temperature)
