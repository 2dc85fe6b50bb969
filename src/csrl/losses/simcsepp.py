"""SimCSE++: negatives without dropout noise, plus a dimension-wise contrastive term (DCL).

Xu, Shao, Chen & Liu, "SimCSE++: Improving Contrastive Learning for Sentence Embeddings from Two Perspectives",
EMNLP 2023 (reference code: github.com/Jiahao004/SimCSE-plus-plus). Two changes to unsupervised SimCSE:

**Off-dropout negatives.** The dropout noise of the negative pairs hurts; the positive pair keeps its two dropout
views h_i, h_i+ (they *are* the augmentation), while the negative pairs are built from a third, dropout-free
forward of the anchors' sentences, h0 (the trainer's ``clean`` view; both sides of each negative pair are
dropout-free)::

    L_off,i = -log  e^{cos(h_i, h_i+)/tau} / ( e^{cos(h_i, h_i+)/tau} + sum_{j != i} e^{cos(h0_i, h0_j)/tau} )

Gradient reaches the encoder through both forwards (the dropout-free one is not detached).

**Dimension-wise contrastive learning (DCL).** Against feature corruption (few informative dimensions), the
*dimensions* are contrasted: each column of the two views' embedding matrices is standardised over the batch,
z~[:, k] = (z[:, k] - mean_k) / sqrt(var_k + eps) (batch norm without affine parameters: biased variance,
eps = 1e-5), C = z~1^T z~2 / B is the (D, D) cross-correlation, and dimension k of view 1 must pick dimension k
of view 2 among all D::

    L_dcl = (1/D) sum_k [ -C_kk/tau_d + log sum_l e^{C_kl/tau_d} ]

Total: L = mean_i L_off,i + ``dcl_weight`` * L_dcl. Defaults (the reference code for BERT-base): ``temperature``
0.05, ``dcl_weight`` 0.1, ``dcl_temperature`` 5 (its help: 5 with off-dropout negatives, 20 for DCL alone),
``off_dropout`` true. Without a ``clean`` view (``off_dropout: false``, or a direct call such as the paradigm
functions make) the first term is SimCSE's InfoNCE over the in-batch positives (the paper's "DCL only" row),
so ``dcl_weight: 0`` with ``off_dropout: false`` is SimCSE.

Relations: the first term is :func:`~csrl.losses.infonce.info_nce` with the negatives' logits swapped for
dropout-free ones; DCL is InfoNCE over dimensions instead of samples, on the cross-correlation matrix Barlow
Twins (:mod:`csrl.losses.barlow`) drives to the identity with squared errors; ESimCSE
(:mod:`csrl.losses.esimcse`) adds negatives instead of cleaning them.

Gradient paradigm (paper B): does not apply. With a clean view the anchor h_i receives only the pull of its
positive (its own logit also sits in the denominator): the push acts on h0, another forward, and DCL couples
whole dimensions, not pairs of sentences. The trainer logs no ``paradigm/*`` values for a step whose loss
received a clean view, and the registry declares no closed form.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from csrl.losses._functional import (
    check_no_hard_neg,
    check_pair,
    check_positive,
    check_range,
    cross_cosine,
    diag_mask,
    diagonal_cross_entropy,
    similarity,
)
from csrl.losses.registry import Loss, LossOutput, register_loss
from csrl.losses.step_inputs import StepInputs

BN_EPS = 1e-5  # BatchNorm1d's default, as in the reference code's affine-free batch norm
MAX_DCL_WEIGHT = 1000.0


def standardize_columns(z: Tensor, eps: float = BN_EPS) -> Tensor:
    """Each column of (B, D) ``z`` centred and scaled by sqrt(biased variance + eps) over the batch."""
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def dimension_contrast(z1: Tensor, z2: Tensor, *, temperature: float) -> Tensor:
    """L_dcl of the module docstring: InfoNCE over the D dimensions of the standardised (B, D) views."""
    c = standardize_columns(z1).T @ standardize_columns(z2) / z1.shape[0]
    return diagonal_cross_entropy(c / temperature)


def off_dropout_info_nce(z1: Tensor, z2: Tensor, clean: Tensor, *, temperature: float) -> Tensor:
    """mean_i L_off,i of the module docstring: positives cos(z1_i, z2_i), negatives cos(clean_i, clean_j), j != i."""
    pos = cross_cosine(z1, z2).diagonal()
    h0 = F.normalize(clean, dim=-1)
    neg = similarity(h0, h0, pair="00")
    eye = diag_mask(neg.shape[0], neg.shape[1], neg.device)
    logits = torch.where(eye, torch.diag_embed(pos), neg) / temperature
    return diagonal_cross_entropy(logits)


def simcsepp(
    z1: Tensor,
    z2: Tensor,
    clean: Tensor | None = None,
    *,
    temperature: float = 0.05,
    dcl_weight: float = 0.1,
    dcl_temperature: float = 5.0,
) -> LossOutput:
    """L = off-dropout InfoNCE (SimCSE's InfoNCE when ``clean`` is None) + ``dcl_weight`` * DCL; z1, z2, clean: (B, D).

    Terms: ``infonce`` (the sample-wise term), ``dcl`` (unweighted)."""
    check_pair(z1, z2, name="simcsepp")
    if clean is None:
        sample = diagonal_cross_entropy(cross_cosine(z1, z2) / temperature)
    else:
        if clean.shape != z1.shape:
            raise ValueError(f"simcsepp: clean must have the shape of z1 {tuple(z1.shape)}, got {tuple(clean.shape)}")
        sample = off_dropout_info_nce(z1, z2, clean, temperature=temperature)
    terms = {"infonce": sample.detach()}
    total = sample
    if dcl_weight:
        dcl = dimension_contrast(z1, z2, temperature=dcl_temperature)
        total = total + dcl_weight * dcl
        terms["dcl"] = dcl.detach()
    return LossOutput(total, terms)


@register_loss("simcsepp")
class SimCSEPlusPlus(Loss):
    """SimCSE++: off-dropout negatives (the trainer's dropout-free ``clean`` view when ``off_dropout``) and DCL
    with ``dcl_weight`` at ``dcl_temperature``; ``temperature`` for the sample-wise term."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = False
    paper_defaults: ClassVar[Mapping[str, Any]] = {
        "temperature": 0.05, "dcl_weight": 0.1, "dcl_temperature": 5.0, "off_dropout": True,
    }  # fmt: skip

    def __init__(
        self, temperature: float = 0.05, dcl_weight: float = 0.1, dcl_temperature: float = 5.0, off_dropout: bool = True
    ) -> None:
        super().__init__()
        check_positive("temperature", temperature)
        check_range("dcl_weight", dcl_weight, 0.0, MAX_DCL_WEIGHT)
        check_positive("dcl_temperature", dcl_temperature)
        if not isinstance(off_dropout, bool):
            raise ValueError(f"off_dropout must be true or false, got {off_dropout!r}")
        self.temperature = temperature
        self.dcl_weight = dcl_weight
        self.dcl_temperature = dcl_temperature
        self.off_dropout = off_dropout

    def forward(
        self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, *, clean: Tensor | None = None
    ) -> LossOutput:
        check_no_hard_neg(hard_neg, "simcsepp")
        return simcsepp(
            z1,
            z2,
            clean,
            temperature=self.temperature,
            dcl_weight=self.dcl_weight,
            dcl_temperature=self.dcl_temperature,
        )

    def step_inputs(self) -> StepInputs:
        return StepInputs(clean_view=self.off_dropout)


__all__ = ["SimCSEPlusPlus", "dimension_contrast", "off_dropout_info_nce", "simcsepp", "standardize_columns"]
