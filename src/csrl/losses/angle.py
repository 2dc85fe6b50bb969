"""AnglE (Li & Li, ACL 2024, "AnglE-optimized Text Embeddings"): CoSENT, in-batch negatives and an angle objective.

    L = w_cos L_cos + w_ibn L_ibn + w_angle L_angle

on the pairs of :mod:`csrl.losses.cosent` (scored pairs when the trainer passes ``scores``, else the in-batch pairs):

* L_cos: CoSENT's ranking of the pairs' cosines, log(1 + sum_{gold_a > gold_b} e^{lambda_c (cos_b - cos_a)}),
  lambda_c = ``cosine_scale``;
* L_angle: the same ranking of the pairs' angle similarities A (below), lambda_a = ``angle_scale``;
* L_ibn: InfoNCE over the positive pairs, -log softmax_j(lambda_i cos(z1_p, c_j))[p] averaged over the positive pairs
  p, lambda_i = ``ibn_scale``, candidates c_j as below.

Angle similarity. Each row is split into a real and an imaginary half, u = (a, b) -> z = a + i b and v = (c, d) ->
w = c + i d in C^{D/2} (odd D: a zero is appended, so the last real coordinate has imaginary part 0). The AnglE
authors divide z by w coordinate-wise, z_k / w_k = z_k conj(w_k) / |w_k|^2, in a normalised form that takes the
moduli of the whole vectors instead of |w_k|^2, q_k = z_k conj(w_k) / (||z|| ||w||), so that only the angle
difference is left, and take the absolute value of the sum of all real and imaginary parts:

    q_k  = [(a_k c_k + b_k d_k) + i (b_k c_k - a_k d_k)] / (||u|| ||v||)
    A(u, v) = | sum_k Re q_k + sum_k Im q_k | = | Re h + Im h |,   h = <z, w> / (||z|| ||w||)

with <z, w> = sum_k z_k conj(w_k), the Hermitian product. Re h = cos(u, v); writing h = |h| e^{-i phi} (phi: how far
w is rotated from z in C^{D/2}), A = |h| |cos phi - sin phi| = sqrt(2) |h| |cos(phi + pi/4)|, in [0, sqrt 2]; A(u, u)
= 1, and rotating every coordinate of z by phi gives A = |cos phi - sin phi|. A is ranked as a similarity: pairs
with higher gold scores must get higher A. The paper describes this quantity as the absolute normalised angle
difference of z and w (Delta theta_zw); csrl computes exactly A as above, which is what the authors' released
``angle_loss`` (angle_emb) and sentence-transformers' ``pairwise_angle_sim`` compute (written here from the formula,
tested against a complex-number implementation of the authors' steps). It is not an angle in radians: csrl does not
compute per-coordinate arguments arg(z_k / w_k).

Pairs and candidates:

* ``scores`` given (B,) (a scored-pair corpus: STS-B train, ``data.scored_pairs``; :mod:`csrl.data.scored_pairs`):
  pair i is (z1_i, z2_i) with gold ``scores[i]``; L_cos and L_angle rank the B pairs; L_ibn's positives are the pairs
  with ``scores[i] >= positive_score``, its candidates every z2_j of the batch (0 when the batch holds no positive).
* no scores (single sentences or pairs: (anchor, positive); NLI triplets: with ``hard_neg``): CoSENT's in-batch
  convention, pairs (z1_i, c_j) over the candidates c = the rows of z2 then those of hard_neg, gold 1 for (i, i') and
  0 for every other pair. On NLI triplets each (anchor, entailment) pair has gold 1 and each (anchor, contradiction)
  pair gold 0 (and so has every pair of an anchor with another anchor's entailment or contradiction); L_ibn is then
  InfoNCE over every anchor, supervised SimCSE's loss at tau = 1 / ``ibn_scale``.

Defaults (``paper_defaults``): weights w_cos = w_ibn = w_angle = 1 and scales 20 (tau = 0.05) for the cosine and
in-batch objectives, as issue #17 reads the paper and as the authors' first code release sets them
(``AngleLoss(w1=1, w2=1, w3=1, cosine_tau=20, ibn_tau=20, ...)``). Angle scale 20: issue #17's reading of the paper,
the default of the authors' later releases (``angle_tau=20``) and sentence-transformers' ``AnglELoss`` (scale 20).
The first release defaulted the angle scale to 1.0 (``angle_tau=1.0``); the later releases also changed the
weights (cosine 0, in-batch 20 or 1, angle 1 or 0.02). These hyper-parameter values were checked against the
authors' public code, not against the paper's tables (its text was not available offline). ``positive_score`` 1.0:
NLI's entailment = 1 / contradiction = 0 labels (the authors' first release casts scores to integers and treats every
non-zero one as positive, which is score >= 1); use 4 for STS-B's 0-5 scale (``configs/methods/angle-stsb.yaml``).

What csrl does differently from the authors' code: L_ibn runs in one direction (anchor z1_p against the second
members c_j), as the paper's formula; the code compares every sentence of the batch with every other in both
directions and marks identical texts as extra positives (csrl does not: duplicate sentences of a batch are false
negatives, as in SimCSE). On NLI triplets the code ranks only the 2B explicit pairs (premise, entailment) = 1 and
(premise, contradiction) = 0, encoding the premise twice; csrl encodes it once and ranks every in-batch pair (the
cross-anchor pairs are extra gold-0 pairs).

Args: ``cosine_weight``, ``ibn_weight``, ``angle_weight`` >= 0 (not all 0); ``cosine_scale``, ``ibn_scale``,
``angle_scale`` > 0; ``positive_score``. Inputs: z1, z2, hard_neg (batch, dim), raw head outputs, batch >= 2, and
``scores`` (batch,) for scored pairs (not with hard_neg). Returns the weighted sum; terms ``"cosine"``, ``"ibn"``,
``"angle"`` (each unweighted).

Paradigm (papers.md 1.3): does not apply. The angle term's gradient is not a combination of the candidate
directions: dIm h/du involves the half-swapped vector (c, d) -> (-d, c) of v, i.e. v rotated by 90 degrees in each
complex coordinate, and the absolute value flips its sign, so part of the gradient lies outside paper B's
push-pull form; on scored pairs there are no negatives at all (:mod:`csrl.losses.cosent`). The loss declares
``paradigm_applies = False``, and the trainer logs no ``paradigm/*`` values for it.

References: X. Li and J. Li, "AnglE-optimized Text Embeddings", ACL 2024 (arXiv:2309.12871); authors' code
github.com/SeanLee97/AnglE; sentence-transformers' ``AnglELoss``. Reported: 82.37 average Spearman on the 7 STS
tasks for supervised BERT-base trained on NLI (papers.md 6; supervised SimCSE: 81.57).

Relations: with w_ibn = w_angle = 0 it is CoSENT (:mod:`csrl.losses.cosent`) at scale lambda_c; with w_cos = w_angle =
0 and no scores it is InfoNCE / supervised SimCSE (:mod:`csrl.losses.infonce`) at tau = 1 / lambda_i (scores select
the anchors); the angle term is CoSENT with A in place of the cosine.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from csrl.losses._functional import candidates, check_pair, check_positive, cross_cosine
from csrl.losses.cosent import check_scores, cosent, paired_cosine, ranking_in_batch
from csrl.losses.registry import Loss, LossOutput, register_loss


def complex_halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """The real and imaginary halves of the rows of ``x`` (n, D), each (n, ceil(D/2)); odd D: a zero is appended."""
    if x.shape[-1] % 2:
        x = F.pad(x, (0, 1))
    re, im = x.chunk(2, dim=-1)
    return re, im


def angle_similarity(u: Tensor, v: Tensor) -> Tensor:
    """A(u_i, v_i) = |Re h_i + Im h_i|, h_i = <z_i, w_i> / (||z_i|| ||w_i||) (module doc), (n,), for raw rows."""
    a, b = complex_halves(F.normalize(u, dim=-1))
    c, d = complex_halves(F.normalize(v, dim=-1))
    return ((a * c + b * d) + (b * c - a * d)).sum(dim=-1).abs()


def angle_similarity_matrix(u: Tensor, v: Tensor) -> Tensor:
    """A(u_i, v_j) for every row i of ``u`` (n, D) and j of ``v`` (m, D), (n, m)."""
    a, b = complex_halves(F.normalize(u, dim=-1))
    c, d = complex_halves(F.normalize(v, dim=-1))
    return (a @ c.T + b @ d.T + b @ c.T - a @ d.T).abs()


def _scored_ibn(z1: Tensor, z2: Tensor, positive: Tensor, scale: float) -> Tensor:
    """mean over the positive pairs p of -log softmax_j(scale cos(z1_p, z2_j))[p]; 0 (in the graph) without any."""
    logits = cross_cosine(z1, z2) * scale
    per_row = F.cross_entropy(logits, torch.arange(z1.shape[0], device=z1.device), reduction="none")
    weights = positive.to(per_row.dtype)
    return (per_row * weights).sum() / weights.sum().clamp_min(1.0)


def angle_loss(
    z1: Tensor,
    z2: Tensor,
    hard_neg: Tensor | None = None,
    scores: Tensor | None = None,
    *,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    scales: tuple[float, float, float] = (20.0, 20.0, 20.0),
    positive_score: float = 1.0,
) -> LossOutput:
    """AnglE: ``weights`` and ``scales`` are (cosine, in-batch, angle); ``scores`` (B,) selects the scored-pair form."""
    check_pair(z1, z2, hard_neg, name="angle")
    (w_cos, w_ibn, w_ang), (s_cos, s_ibn, s_ang) = weights, scales
    if scores is not None:
        if hard_neg is not None:
            raise ValueError("angle: scores (scored pairs) and hard_neg (triplets) cannot be combined")
        check_scores(z1, scores, name="angle")
        gold = scores.to(z1.dtype)
        l_cos = cosent(paired_cosine(z1, z2), gold, s_cos)
        l_ang = cosent(angle_similarity(z1, z2), gold, s_ang)
        l_ibn = _scored_ibn(z1, z2, scores >= positive_score, s_ibn)
    else:
        cands = candidates(z2, hard_neg)
        cos = cross_cosine(z1, cands)
        l_cos = ranking_in_batch(cos * s_cos)
        l_ang = ranking_in_batch(angle_similarity_matrix(z1, cands) * s_ang)
        l_ibn = F.cross_entropy(cos * s_ibn, torch.arange(z1.shape[0], device=z1.device))
    total = w_cos * l_cos + w_ibn * l_ibn + w_ang * l_ang
    return LossOutput(total, {"cosine": l_cos.detach(), "ibn": l_ibn.detach(), "angle": l_ang.detach()})


@register_loss("angle")
class AnglE(Loss):
    """AnglE with the (cosine, in-batch, angle) weights and scales of the module doc; ``scores`` for scored pairs."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    scored_pairs: ClassVar[bool] = True
    paradigm_applies: ClassVar[bool] = False
    paper_defaults: ClassVar[Mapping[str, Any]] = {
        "cosine_weight": 1.0, "ibn_weight": 1.0, "angle_weight": 1.0,
        "cosine_scale": 20.0, "ibn_scale": 20.0, "angle_scale": 20.0,
    }  # fmt: skip

    def __init__(
        self,
        cosine_weight: float = 1.0,
        ibn_weight: float = 1.0,
        angle_weight: float = 1.0,
        cosine_scale: float = 20.0,
        ibn_scale: float = 20.0,
        angle_scale: float = 20.0,
        positive_score: float = 1.0,
    ) -> None:
        super().__init__()
        weights = (cosine_weight, ibn_weight, angle_weight)
        for name, w in zip(("cosine_weight", "ibn_weight", "angle_weight"), weights, strict=True):
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {w}")
        if not any(weights):
            raise ValueError("cosine_weight, ibn_weight and angle_weight are all 0: the loss would be 0")
        for name, s in (("cosine_scale", cosine_scale), ("ibn_scale", ibn_scale), ("angle_scale", angle_scale)):
            check_positive(name, s)
        if not math.isfinite(positive_score):
            raise ValueError(f"positive_score must be a finite number, got {positive_score}")
        self.weights = (float(cosine_weight), float(ibn_weight), float(angle_weight))
        self.scales = (float(cosine_scale), float(ibn_scale), float(angle_scale))
        self.positive_score = float(positive_score)

    def forward(
        self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, scores: Tensor | None = None
    ) -> LossOutput:
        return angle_loss(z1, z2, hard_neg, scores, weights=self.weights, scales=self.scales,
                          positive_score=self.positive_score)  # fmt: skip


__all__ = ["AnglE", "angle_loss", "angle_similarity", "angle_similarity_matrix", "complex_halves"]
