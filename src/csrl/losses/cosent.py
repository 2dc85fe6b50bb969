"""CoSENT (Su Jianlin, 2022): a ranking loss on cosine similarities, for scored pairs and in-batch.

Scored pairs, :func:`cosent`: pairs a = 1..N with predicted cosines cos_a and gold scores gold_a,

    L = log(1 + sum_{(a, b): gold_a > gold_b} exp(lambda (cos_b - cos_a)))

so every pair b ranked below a by the gold score adds a term, large when the cosines rank them the other
way. Only the order of the gold scores matters; lambda = ``scale`` (20, i.e. a temperature of 0.05).

In-batch, :func:`cosent_in_batch` (registered as ``"cosent"``, on the trainer's views): z1 anchors, z2
positives, optional hard_neg. Without gold scores the pairs are (i, c_j) for every anchor i and
candidate c_j (the rows of z2, then those of hard_neg), with gold 1 for the positive pair (i, i') and
gold 0 for every other pair: (i, j'), j != i, and every hard negative (i's own hard_neg_i and, as in
InfoNCE, the other anchors' ones). With s_ij = cos(z1_i, c_j) the sum runs over every (negative pair,
positive pair) of the whole batch:

    L = log(1 + sum_p sum_{(k, l) != (k, k')} exp(lambda (s_kl - s_pp')))
      = softplus( logsumexp_{(k, l) negative} lambda s_kl + logsumexp_p (-lambda s_pp') )

computed in O(B M) from the factorised form (not over the B^2 M^2 pairs of pairs).

Args: ``scale`` lambda > 0 (20). Inputs: z1, z2, hard_neg (batch, dim), raw head outputs; batch >= 2.
Returns a scalar (one log over the whole batch, not a mean over anchors); term ``"cosent"``.

Paradigm (papers.md 1.3): with Q_{kl,p} = e^{lambda (s_kl - s_pp')} / (1 + sum) and q_ij = sum_p Q_{ij,p},
dL/dh_i = lambda [sum_{j != i} q_ij h_j' - (sum_{(k,l)} Q_{kl,i}) h_i']. The weights are ONE softmax over
all pairs of the batch, not one per anchor: anchor i's push and its pull depend on every other anchor's
cosines, so there is no per-anchor closed form (``has_closed_form`` is False). The effective
decomposition (``paradigm.effective_decomposition``) still reads GD, W, R off autograd; with the declared
scale c = lambda the mean over anchors of GD_i is 1 - e^{-L} (single anchors may exceed 1).

References: Su Jianlin, "CoSENT (1): a more effective sentence vector scheme than Sentence-BERT",
kexue.fm/archives/8847 (2022); sentence-transformers' ``CoSENTLoss``.

Relations: InfoNCE / SimCSE, L_i = log(1 + sum_{j != i} e^{(s_ij - s_ii')/tau}), has the terms with k = p
of the in-batch form (lambda = 1/tau) but one log per anchor; CoSENT pools every anchor's pairs in one
log, so a positive is pulled until it scores above every negative pair of the batch, not only above its
own anchor's negatives.
AnglE (Li & Li, 2023) keeps this ranking term and adds an angle-difference term in complex space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from csrl.losses._functional import candidates, check_pair, check_positive, cross_cosine, diag_mask
from csrl.losses.registry import Loss, LossOutput, register_loss


def cosent(scores_pred: Tensor, gold: Tensor, scale: float = 20.0) -> Tensor:
    """L = log(1 + sum_{(a, b): gold_a > gold_b} exp(scale (cos_b - cos_a))), a 0-dim tensor.

    scores_pred: (N,) predicted cosines of N scored pairs; gold: (N,) their gold scores (any scale; ties
    add no term). Memory O(N^2).
    """
    if scores_pred.ndim != 1 or scores_pred.shape != gold.shape:
        raise ValueError(
            f"cosent: scores_pred and gold must both be (n,), got {tuple(scores_pred.shape)} and {tuple(gold.shape)}"
        )
    s = scores_pred * scale
    ranked = gold[:, None] > gold[None, :]  # [a, b]: a must score above b
    terms = (s[None, :] - s[:, None])[ranked]  # scale (cos_b - cos_a)
    return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)


def cosent_in_batch(z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, *, scale: float = 20.0) -> LossOutput:
    """CoSENT with gold 1 for each (anchor, positive) pair and gold 0 for every other in-batch pair (module doc)."""
    check_pair(z1, z2, hard_neg, name="cosent")
    s = cross_cosine(z1, candidates(z2, hard_neg)) * scale
    pos = diag_mask(s.shape[0], s.shape[1], s.device)
    lse_neg = torch.logsumexp(s.masked_fill(pos, float("-inf")).flatten(), dim=0)
    lse_pos = torch.logsumexp(-s.diagonal(), dim=0)
    loss = F.softplus(lse_neg + lse_pos)
    return LossOutput(loss, {"cosent": loss.detach()})


@register_loss("cosent")
class CoSENT(Loss):
    """CoSENT with ``scale`` lambda (20) on the trainer's views; hard negatives are extra gold-0 pairs."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    paper_defaults: ClassVar[Mapping[str, Any]] = {"scale": 20.0}

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        check_positive("scale", scale)
        self.scale = scale

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return cosent_in_batch(z1, z2, hard_neg, scale=self.scale)

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c = lambda: the mean over anchors of GD_i is then 1 - e^{-L} (no closed form; see the module doc)."""
        return cos.new_full((cos.shape[0],), self.scale)
