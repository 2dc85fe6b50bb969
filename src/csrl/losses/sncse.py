"""SNCSE (Wang et al., 2022): InfoNCE plus a bidirectional margin loss on soft negatives.

Wang, Li, Huang, Dou, Kong, Shao, "SNCSE: Contrastive Learning for Unsupervised Sentence Embedding with Soft
Negative Samples", arXiv:2201.05979 (2022). Each sentence's negation (a *soft negative*: nearly the same
text, another meaning; csrl's rule: :func:`csrl.data.negation.negate`) is encoded as a third view
``hard_neg``. With h_i = z1_i (anchor), h_i' = z2_i (its dropout positive), h_i^- = hard_neg_i (its negation):

    L = L_InfoNCE(z1, z2) + lambda * mean_i BML_i
    BML_i = ReLU(Delta_i + alpha) + ReLU(-Delta_i - beta),   Delta_i = cos(h_i, h_i^-) - cos(h_i, h_i')

BML is zero while Delta_i lies in [-beta, -alpha]: the negation must stay *less* similar than the positive
(Delta <= -alpha), but not by more than beta (Delta >= -beta; it shares almost all of the sentence's words).
The InfoNCE term is SimCSE's over (z1, z2) only: the soft negatives are *not* in its denominator (the
paper's Eq. and its code). Paper defaults (BERT-base): tau = 0.05, alpha = 0.1, beta = 0.3, lambda = 1e-3
(RoBERTa: lambda = 5e-4); encoder: PromptBERT-style [MASK] representation (two templates, the second for
the positive and the negation) with SimCSE's training-only MLP; reported 78.97 (7-task STS average,
BERT-base, unsupervised).

Args: ``temperature`` tau > 0; ``alpha``, ``beta`` with 0 <= alpha <= beta <= 2 (cosine gaps);
``bml_weight`` lambda >= 0 (0: plain InfoNCE). Inputs: z1, z2, hard_neg (batch, dim), raw head outputs.
Without ``hard_neg`` (no soft negatives) the loss is InfoNCE alone; the trainer always passes the negations
(the loss declares ``negation_view``, :mod:`csrl.train.batches`). Terms: ``infonce``, ``bml`` (mean BML),
``soft_gap`` (mean Delta).

Gradient paradigm (paper B, :mod:`csrl.losses.paradigm`). With P = softmax_j(cos(h_i, h_j')/tau) and the
gate g_i = 1[Delta_i > -alpha] - 1[Delta_i < -beta] in {-1, 0, 1} (ReLU' at 0 is 0, as in torch),

    dL/dh_i = (1/B) [ (1/tau) sum_{j != i} P_ij h_j' + lambda g_i h_i^- - ((1/tau)(1 - P_ii') + lambda g_i) h_i' ]

(before the projection of the normalisation): the negation is one more candidate, pushed with weight
lambda g_i, and the pull on the positive grows by the same amount. So with c_i = 1/tau:
GD_i = (1 - P_ii') + tau lambda g_i, W = (P_ij for j != i, tau lambda g_i on the own negation) / GD_i, R = 1
(:meth:`SNCSE.paradigm_closed_form`; the trainer's statistics read the same off autograd). When g_i = -1
(the negation already too far) BML *pulls* h_i towards its negation: that W entry is negative and W is a
signed weighting, not a distribution.

Relations: InfoNCE / SimCSE is lambda = 0 (:mod:`csrl.losses.infonce`); supervised SimCSE puts a hard
negative *into* the InfoNCE denominator (pushed as far as possible), SNCSE keeps its negation out of it and
holds it in a band by a margin loss; MPT/MET/MAT are one-sided margins against the hardest in-batch
negative, BML is two-sided against one specific sample.
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
    check_positive,
    cross_cosine,
    diagonal_cross_entropy,
)
from csrl.losses.infonce import softmax_closed_form
from csrl.losses.registry import Loss, LossOutput, register_loss


def soft_gap(s: Tensor) -> Tensor:
    """Delta_i = cos(h_i, h_i^-) - cos(h_i, h_i'), (B,), from the (B, 2B) cosines of z1 with [z2; hard_neg]."""
    b = s.shape[0]
    return s[:, b:].diagonal() - s[:, :b].diagonal()


def bidirectional_margin(delta: Tensor, *, alpha: float, beta: float) -> Tensor:
    """BML_i = ReLU(Delta_i + alpha) + ReLU(-Delta_i - beta), (B,): zero for Delta_i in [-beta, -alpha]."""
    return F.relu(delta + alpha) + F.relu(-delta - beta)


def sncse(
    z1: Tensor,
    z2: Tensor,
    hard_neg: Tensor | None = None,
    *,
    temperature: float = 0.05,
    alpha: float = 0.1,
    beta: float = 0.3,
    bml_weight: float = 1e-3,
) -> LossOutput:
    """L = InfoNCE(z1, z2) + bml_weight * mean_i BML_i (module docstring); ``hard_neg`` = the soft negatives."""
    check_pair(z1, z2, hard_neg, name="sncse")
    b = z1.shape[0]
    s = cross_cosine(z1, candidates(z2, hard_neg))  # (B, B) or (B, 2B): one recorded matrix for the paradigm
    nce = diagonal_cross_entropy(s[:, :b] / temperature)
    if hard_neg is None:
        return LossOutput(nce, {"infonce": nce.detach()})
    delta = soft_gap(s)
    bml = bidirectional_margin(delta, alpha=alpha, beta=beta).mean()
    total = nce + bml_weight * bml
    return LossOutput(total, {"infonce": nce.detach(), "bml": bml.detach(), "soft_gap": delta.mean().detach()})


@register_loss("sncse")
class SNCSE(Loss):
    """SNCSE: InfoNCE (``temperature``) + ``bml_weight`` x BML(``alpha``, ``beta``) on the negation view."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = True
    negation_view: ClassVar[bool] = True
    paper_defaults: ClassVar[Mapping[str, Any]] = {"temperature": 0.05, "alpha": 0.1, "beta": 0.3, "bml_weight": 1e-3}

    def __init__(
        self, temperature: float = 0.05, alpha: float = 0.1, beta: float = 0.3, bml_weight: float = 1e-3
    ) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not (math.isfinite(value) and 0.0 <= value <= 2.0):
                raise ValueError(f"{name} must be a cosine gap in [0, 2], got {value}")
        if alpha > beta:
            raise ValueError(f"alpha must be <= beta (BML's band is [-beta, -alpha]), got alpha={alpha}, beta={beta}")
        if not (math.isfinite(bml_weight) and bml_weight >= 0.0):
            raise ValueError(f"bml_weight must be a finite number >= 0, got {bml_weight}")
        self.temperature, self.alpha, self.beta, self.bml_weight = temperature, alpha, beta, bml_weight

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return sncse(z1, z2, hard_neg, temperature=self.temperature, alpha=self.alpha, beta=self.beta,
                     bml_weight=self.bml_weight)  # fmt: skip

    def paradigm_closed_form(self, s: Tensor) -> ClosedForm:
        """GD_i = 1 - P_ii' + tau lambda g_i, W = (P_ij, tau lambda g_i) / GD_i, R = 1 (module docstring);
        InfoNCE's when ``s`` has no soft-negative columns."""
        b = s.shape[0]
        ones = torch.ones_like(s.diagonal())
        nce = softmax_closed_form(s[:, :b] / self.temperature, ones)
        if s.shape[1] == b:
            return nce
        delta = soft_gap(s)
        gate = (delta > -self.alpha).to(s.dtype) - (delta < -self.beta).to(s.dtype)
        soft = self.temperature * self.bml_weight * gate
        gd = nce.gd + soft
        weights = torch.cat([nce.w * nce.gd[:, None], torch.diag_embed(soft)], dim=1)
        safe = torch.where(gd != 0, gd, torch.full_like(gd, float("nan")))
        return ClosedForm(gd, weights / safe[:, None], ones)

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c = 1/tau (the InfoNCE term's)."""
        return cos.new_full((cos.shape[0],), 1.0 / self.temperature)


__all__ = ["SNCSE", "bidirectional_margin", "sncse", "soft_gap"]
