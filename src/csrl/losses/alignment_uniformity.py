"""Alignment + uniformity objectives of paper B (papers.md 1.6): MHE and MHS, in ``ori`` and ``mod`` form.

Variants (``variant`` parameter): ``"ori"``; ``"mod"`` = every switch of paper B; or a ``.``-joined subset
(``"w_gd.w_r"``) for ablations. Switches:

- ``w_gd``: an anchor is detached unless 1 - max_{k != i} cos(h_i, h_k) < ``gd_margin`` (same view);
- ``w_w`` (MHE only): uniformity on cosines / ``temperature``, alignment weighted per anchor by that
  anchor's share of the uniformity gradient;
- ``w_r``: alignment rescaled to ``ratio`` x the anchor's total negative weight.

Both losses are symmetric in the two views. Alignment is not stop-gradient: the term of pair i weights
with the mean of its two anchors' weights and pulls both views (as the reference code).

Relations: the terms are Wang & Isola's metrics (:func:`csrl.analysis.sentence_metrics.alignment`,
:func:`~csrl.analysis.sentence_metrics.uniformity`), but computed here from the recorded cosine matrices
(:func:`~csrl.losses._functional.similarity`) so that the paradigm's effective decomposition sees them:
ori MHE's alignment term is ``alignment(z1, z2)`` and U_v = ``uniformity(h_v, t=1/2)`` + 1 +
log(N (N - 1) / 2) (tests/losses/test_noncontrastive.py checks both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from csrl.losses._functional import (
    check_no_hard_neg,
    check_pair,
    check_positive,
    diag_mask,
    gated_views,
    parse_variant,
    similarity,
    strict_lower,
)
from csrl.losses.registry import Loss, LossOutput, register_loss

MHS_SWITCHES = ("w_gd", "w_r")


def mhe(
    z1: Tensor,
    z2: Tensor,
    hard_neg: Tensor | None = None,
    *,
    variant: str = "ori",
    lam: float = 1.0,
    gd_margin: float = 0.30,
    temperature: float = 0.05,
    ratio: float = 1.0,
) -> LossOutput:
    """MHE: L = lam (U_0 + U_1) + sum_i (w0_i + w1_i)/2 * R' * (2 - 2 s_ii').

    U_v = logsumexp_{k > l} (s_kl / t) over the strict lower triangle of view v's cosine matrix, t = 1
    (ori) or ``temperature`` (``w_w``). w_v,i = 1/N (ori) or, with ``w_w``, anchor i's total weight in
    dU_v: sum_{k != i} e^{s_ik/t} / (t sum_{k > l} e^{s_kl/t}) (detached). R' = ``ratio`` with ``w_r``,
    else 1, so ori is lam (U_0 + U_1) + mean_i ||h_i - h_i'||^2. z1, z2: (batch, dim).
    Terms: ``"align"``, ``"uniform"`` (they sum to the total).
    """
    check_pair(z1, z2, hard_neg, name="mhe")
    check_no_hard_neg(hard_neg, "mhe")
    switches = parse_variant(variant, name="mhe")
    u, v = gated_views(z1, z2, switches, gd_margin)
    n = u.shape[0]
    t = temperature if "w_w" in switches else 1.0
    lower, eye = strict_lower(n, u.device), diag_mask(n, n, u.device)
    uniform = u.new_zeros(())
    weight = u.new_zeros(n)
    for h, pair in ((u, "00"), (v, "11")):
        s = similarity(h, h, pair=pair) / t
        u_v = torch.logsumexp(s[lower], dim=0)
        uniform = uniform + u_v
        if "w_w" in switches:
            lse_i = torch.logsumexp(s.detach().masked_fill(eye, float("-inf")), dim=1)
            weight = weight + torch.exp(lse_i - u_v.detach()) / t / 2
        else:
            weight = weight + 1.0 / n / 2
    align = 2 - 2 * similarity(u, v, pair="01").diagonal()
    r = ratio if "w_r" in switches else 1.0
    align_term = (align * weight * r).sum()
    uniform_term = lam * uniform
    return LossOutput(align_term + uniform_term, {"align": align_term.detach(), "uniform": uniform_term.detach()})


def mhs(
    z1: Tensor,
    z2: Tensor,
    hard_neg: Tensor | None = None,
    *,
    variant: str = "ori",
    lam: float = 1.0,
    gd_margin: float = 0.30,
    ratio: float = 1.0,
) -> LossOutput:
    """MHS: L = lam (mean_i S0_i + mean_i S1_i) + mean_i (w0_i + w1_i)/2 * R' * (2 - 2 s_ii').

    S0_i = -min_{j != i} ||h_i - sg(h_j')|| (push away the nearest cross-view neighbour), S1 the same with
    the views swapped; distances sqrt(2 - 2 s + 1e-4). w = 1 (ori) or, with ``w_r``, 1/min_j distance
    (the anchor's separation weight, detached), R' = ``ratio``. ``w_w`` does not apply (W is already
    one-hot), so ``"mod"`` = ``w_gd.w_r``. z1, z2: (batch, dim). Terms: ``"align"``, ``"separation"``.
    """
    check_pair(z1, z2, hard_neg, name="mhs")
    check_no_hard_neg(hard_neg, "mhs")
    switches = parse_variant(variant, name="mhs", allowed=MHS_SWITCHES)
    u, v = gated_views(z1, z2, switches, gd_margin)
    n = u.shape[0]
    eye = diag_mask(n, n, u.device)
    separation = u.new_zeros(())
    weight = u.new_zeros(n)
    for a, b, pair in ((u, v, "01"), (v, u, "10")):
        d = ((2 - 2 * similarity(a, b.detach(), pair=pair)).clamp_min(0.0) + 1e-4).sqrt()
        nearest = d.masked_fill(eye, float("inf")).amin(dim=1)
        separation = separation - nearest.mean()
        weight = weight + (1.0 / nearest.detach() if "w_r" in switches else torch.ones_like(nearest)) / 2
    align = 2 - 2 * similarity(u, v, pair="01").diagonal()
    r = ratio if "w_r" in switches else 1.0
    align_term = (align * weight * r).mean()
    sep_term = lam * separation
    return LossOutput(align_term + sep_term, {"align": align_term.detach(), "separation": sep_term.detach()})


class _Objective(Loss):
    in_batch_negatives: ClassVar[bool] = True  # uniformity / separation push apart rows of the batch
    hard_negatives: ClassVar[bool] = False

    def __init__(self, variant: str, lam: float, gd_margin: float, ratio: float, allowed: tuple[str, ...]) -> None:
        super().__init__()
        parse_variant(variant, name=type(self).__name__.lower(), allowed=allowed)
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        check_positive("gd_margin", gd_margin)
        check_positive("ratio", ratio)
        self.variant = variant
        self.lam = lam
        self.gd_margin = gd_margin
        self.ratio = ratio


@register_loss("mhe")
class MHE(_Objective):
    """Alignment + hyperspherical energy (uniformity); ``variant`` ori | mod | subset of w_gd.w_w.w_r.

    Paper B's rows (lam, gd_margin, ratio per backbone and variant) are the presets ``mhe-{ori,mod}-*``.
    """

    paper_defaults: ClassVar[Mapping[str, Any]] = {"temperature": 0.05}

    def __init__(
        self,
        variant: str = "ori",
        lam: float = 1.0,
        gd_margin: float = 0.30,
        temperature: float = 0.05,
        ratio: float = 1.0,
    ) -> None:
        super().__init__(variant, lam, gd_margin, ratio, ("w_gd", "w_w", "w_r"))
        check_positive("temperature", temperature)
        self.temperature = temperature

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return mhe(
            z1,
            z2,
            hard_neg,
            variant=self.variant,
            lam=self.lam,
            gd_margin=self.gd_margin,
            temperature=self.temperature,
            ratio=self.ratio,
        )


@register_loss("mhs")
class MHS(_Objective):
    """Alignment + hyperspherical separation; ``variant`` ori | mod (= w_gd.w_r) | subset.

    Paper B uses lam = 1 in every row; the other values are the presets ``mhs-{ori,mod}-*``.
    """

    paper_defaults: ClassVar[Mapping[str, Any]] = {"lam": 1.0}

    def __init__(self, variant: str = "ori", lam: float = 1.0, gd_margin: float = 0.30, ratio: float = 1.0) -> None:
        super().__init__(variant, lam, gd_margin, ratio, MHS_SWITCHES)

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return mhs(z1, z2, hard_neg, variant=self.variant, lam=self.lam, gd_margin=self.gd_margin, ratio=self.ratio)
