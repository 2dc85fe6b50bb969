"""VICReg as a sample-wise surrogate on normalised embeddings (paper B, papers.md 1.6), ori and mod."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from csrl.losses._functional import (
    check_no_hard_neg,
    check_pair,
    gate_rows,
    gd_keep,
    parse_variant,
    sample_weights,
    sample_wise_direction,
)
from csrl.losses.barlow import SampleWise
from csrl.losses.registry import LossOutput, register_loss


def vicreg(
    z1: Tensor,
    z2: Tensor,
    hard_neg: Tensor | None = None,
    *,
    variant: str = "ori",
    lam: float = 1.0,
    gd_margin: float = 0.30,
    temperature: float = 0.05,
    ratio: float = 1.0,
    weighting: str = "exp",
    power: float = 4.0,
) -> LossOutput:
    """L = D(u, v) + D(v, u), one direction D(u1, u2) = sum_i [pos_i + lam sum_k w_ik u1_i . sg(u1_k)].

    u = normalised z1, v = normalised z2, N = batch. The weights come from the *same* view:
    ori w = S(u1)/N * 2/N, S(u1) = sg(u1) sg(u1)^T; ``w_w`` e^{S(u1)/temperature} (or
    clamp_min(S, 1e-4)^power) normalised by its off-diagonal total. Positive, ori:
    pos_i = -(2/N) u1_i . sg(u2_i); ``w_r``: pos_i = -lam R (sum_{k != i} w_ik) u1_i . u2_i.
    z1, z2: (batch, dim). Terms ``"positive"``, ``"negative"``.
    Relations: Barlow Twins takes w from the other view and weights the positive per dimension.
    """
    check_pair(z1, z2, hard_neg, name="vicreg")
    check_no_hard_neg(hard_neg, "vicreg")
    switches = parse_variant(variant, name="vicreg")
    u, v = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    if "w_gd" in switches:
        u, v = gate_rows(u, gd_keep(u, gd_margin)), gate_rows(v, gd_keep(v, gd_margin))
    positive, negative = u.new_zeros(()), u.new_zeros(())
    for a, b, pairs in ((u, v, ("00", "01")), (v, u, ("11", "10"))):
        ad = a.detach()
        w = sample_weights(ad @ ad.T, switches, temperature=temperature, weighting=weighting, power=power)
        p, q = sample_wise_direction(a, b, w, pairs=pairs, switches=switches, lam=lam, ratio=ratio, dim_weight=None)
        positive, negative = positive + p, negative + q
    return LossOutput(positive + negative, {"positive": positive.detach(), "negative": negative.detach()})


@register_loss("vicreg")
class VICReg(SampleWise):
    """Sample-wise VICReg; ``variant`` ori | mod | subset of w_gd.w_w.w_r; ``lam`` lambda."""

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return vicreg(
            z1,
            z2,
            hard_neg,
            variant=self.variant,
            lam=self.lam,
            gd_margin=self.gd_margin,
            temperature=self.temperature,
            ratio=self.ratio,
            weighting=self.weighting,
            power=self.power,
        )
