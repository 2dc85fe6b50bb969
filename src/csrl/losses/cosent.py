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

computed in O(B M) from the factorised form (not over the B^2 M^2 pairs of pairs). On NLI triplets
(anchor, entailment, contradiction) this gives each (anchor, entailment) pair gold 1 and each (anchor,
contradiction) pair gold 0, and, in-batch, every pair of an anchor with another anchor's entailment or
contradiction gold 0 as well.

Scored pairs, :func:`cosent_scored` (the registered loss with ``scores=``: a scored-pair corpus, ``data.scored_pairs``
or ``data.format=stsb``, :mod:`csrl.data.scored_pairs`): row i of z1 and z2 is one pair with gold score
``scores[i]`` (STS-B: 0-5), cos_i = cos(z1_i, z2_i), and :func:`cosent` ranks the B pairs of the batch; no other
in-batch pair enters (Su's original use on STS-B / SNLI pairs).

Args: ``scale`` lambda > 0 (20). Inputs: z1, z2, hard_neg (batch, dim), raw head outputs; batch >= 2; or z1, z2 and
``scores`` (batch,), without hard_neg. Returns a scalar (one log over the whole batch, not a mean over anchors);
term ``"cosent"``.

Paradigm (papers.md 1.3): with Q_{kl,p} = e^{lambda (s_kl - s_pp')} / (1 + sum) and q_ij = sum_p Q_{ij,p},
dL/dh_i = lambda [sum_{j != i} q_ij h_j' - (sum_{(k,l)} Q_{kl,i}) h_i']. The weights are ONE softmax over
all pairs of the batch, not one per anchor: anchor i's push and its pull depend on every other anchor's
cosines, so there is no per-anchor closed form (``has_closed_form`` is False). The effective
decomposition (``paradigm.effective_decomposition``) still reads GD, W, R off autograd; with the declared
scale c = lambda the mean over anchors of GD_i is 1 - e^{-L} (single anchors may exceed 1).
On scored pairs the paradigm does not apply: dL/dz1_i = c_i (I - h_i h_i^T) h_i' / ||z1_i||, with
Q_{a,b} = e^{lambda (cos_b - cos_a)} / (1 + sum) and the signed c_i = dL/dcos_i = lambda (sum_{a: gold_a > gold_i}
Q_{a,i} - sum_{b: gold_i > gold_b} Q_{i,b}): pair i is pushed apart while it scores above a pair of higher gold
score, pulled together while it scores below one of lower gold score. Anchor i has no negatives j != i to weight
(no W, no R), and its one direction, its own partner, may push; so the trainer logs no ``paradigm/*`` values on
a scored-pair corpus (:attr:`csrl.train.methods.Method.paradigm_applies`).

References: Su Jianlin, "CoSENT (1): a more effective sentence vector scheme than Sentence-BERT",
kexue.fm/archives/8847 (2022); sentence-transformers' ``CoSENTLoss``.

Relations: InfoNCE / SimCSE, L_i = log(1 + sum_{j != i} e^{(s_ij - s_ii')/tau}), has the terms with k = p
of the in-batch form (lambda = 1/tau) but one log per anchor; CoSENT pools every anchor's pairs in one
log, so a positive is pulled until it scores above every negative pair of the batch, not only above its
own anchor's negatives.
AnglE (:mod:`csrl.losses.angle`, Li & Li, ACL 2024) is w1 x this loss + w2 x an in-batch InfoNCE + w3 x the same
ranking on an angle similarity in complex space, on the same pairs.
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


def ranking_in_batch(s: Tensor) -> Tensor:
    """:func:`cosent` with gold 1 on the diagonal and 0 elsewhere, from the already scaled (B, M) score matrix ``s``:
    softplus(logsumexp of the off-diagonal entries + logsumexp_p(-s_pp)), in O(B M)."""
    pos = diag_mask(s.shape[0], s.shape[1], s.device)
    lse_neg = torch.logsumexp(s.masked_fill(pos, float("-inf")).flatten(), dim=0)
    lse_pos = torch.logsumexp(-s.diagonal(), dim=0)
    return F.softplus(lse_neg + lse_pos)


def cosent_in_batch(z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, *, scale: float = 20.0) -> LossOutput:
    """CoSENT with gold 1 for each (anchor, positive) pair and gold 0 for every other in-batch pair (module doc)."""
    check_pair(z1, z2, hard_neg, name="cosent")
    loss = ranking_in_batch(cross_cosine(z1, candidates(z2, hard_neg)) * scale)
    return LossOutput(loss, {"cosent": loss.detach()})


def check_scores(z1: Tensor, scores: Tensor, *, name: str) -> None:
    """``scores`` must be (B,) for the B pairs of ``z1`` (the trainer's scored pairs)."""
    if scores.ndim != 1 or scores.shape[0] != z1.shape[0]:
        raise ValueError(f"{name}: scores must be (batch,) = ({z1.shape[0]},), got {tuple(scores.shape)}")


def paired_cosine(z1: Tensor, z2: Tensor) -> Tensor:
    """cos(z1_i, z2_i), (B,), for raw rows."""
    return (F.normalize(z1, dim=-1) * F.normalize(z2, dim=-1)).sum(dim=-1)


def cosent_scored(z1: Tensor, z2: Tensor, scores: Tensor, *, scale: float = 20.0) -> LossOutput:
    """CoSENT on B scored pairs: :func:`cosent` of cos(z1_i, z2_i) against the gold ``scores`` (module doc)."""
    check_pair(z1, z2, name="cosent")
    check_scores(z1, scores, name="cosent")
    loss = cosent(paired_cosine(z1, z2), scores.to(z1.dtype), scale)
    return LossOutput(loss, {"cosent": loss.detach()})


@register_loss("cosent")
class CoSENT(Loss):
    """CoSENT with ``scale`` lambda (20) on the trainer's views; hard negatives are extra gold-0 pairs; with
    ``scores`` (a scored-pair corpus) the ranking of the batch's B pairs by their gold scores."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    scored_pairs: ClassVar[bool] = True
    paper_defaults: ClassVar[Mapping[str, Any]] = {"scale": 20.0}

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        check_positive("scale", scale)
        self.scale = scale

    def forward(
        self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, scores: Tensor | None = None
    ) -> LossOutput:
        if scores is None:
            return cosent_in_batch(z1, z2, hard_neg, scale=self.scale)
        if hard_neg is not None:
            raise ValueError("cosent: scores (scored pairs) and hard_neg (triplets) cannot be combined")
        return cosent_scored(z1, z2, scores, scale=self.scale)

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c = lambda: the mean over anchors of GD_i is then 1 - e^{-L} (no closed form; see the module doc)."""
        return cos.new_full((cos.shape[0],), self.scale)
