"""Barlow Twins as a sample-wise surrogate on normalised embeddings (paper B, papers.md 1.6), ori and mod."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from csrl.losses._functional import (
    check_no_hard_neg,
    check_pair,
    check_positive,
    gate_rows,
    gd_keep,
    parse_variant,
    sample_weights,
    sample_wise_direction,
)
from csrl.losses.registry import LossOutput, register_loss

WEIGHTINGS = ("exp", "power")


def barlow_twins(
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

    u = normalised z1, v = normalised z2, N = batch. The weights come from the *other* view:
    ori w = S(u2)/N * 2/N with S(u2) = sg(u2) sg(u2)^T; ``w_w`` e^{S(u2)/temperature} (or
    clamp_min(S, 1e-4)^power) normalised by its off-diagonal total. Positive, ori:
    pos_i = -sum_d a_d u1_id sg(u2_id), a_d = (1 - (1 - lam) C_dd) 2/N, C = sg(u1)^T sg(u2) / N;
    ``w_r``: pos_i = -lam R (sum_{k != i} w_ik) u1_i . u2_i. ``w_gd``: see
    :mod:`csrl.losses.alignment_uniformity`. z1, z2: (batch, dim). Terms ``"positive"``, ``"negative"``.
    Relations: VICReg uses the same view's similarities for w and a_d = 2/N.
    """
    check_pair(z1, z2, hard_neg, name="barlowtwins")
    check_no_hard_neg(hard_neg, "barlowtwins")
    switches = parse_variant(variant, name="barlowtwins")
    u, v = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    if "w_gd" in switches:
        u, v = gate_rows(u, gd_keep(u, gd_margin)), gate_rows(v, gd_keep(v, gd_margin))
    n = u.shape[0]
    positive, negative = u.new_zeros(()), u.new_zeros(())
    for a, b, pairs in ((u, v, ("00", "01")), (v, u, ("11", "10"))):
        bd = b.detach()
        w = sample_weights(bd @ bd.T, switches, temperature=temperature, weighting=weighting, power=power)
        dim_weight = (1 - (1 - lam) * (a.detach() * bd).sum(dim=0) / n) * (2.0 / n)
        p, q = sample_wise_direction(
            a, b, w, pairs=pairs, switches=switches, lam=lam, ratio=ratio, dim_weight=dim_weight
        )
        positive, negative = positive + p, negative + q
    return LossOutput(positive + negative, {"positive": positive.detach(), "negative": negative.detach()})


class SampleWise(nn.Module):
    """Shared hyper-parameters of the Barlow Twins and VICReg surrogates."""

    def __init__(
        self,
        variant: str = "ori",
        lam: float = 1.0,
        gd_margin: float = 0.30,
        temperature: float = 0.05,
        ratio: float = 1.0,
        weighting: str = "exp",
        power: float = 4.0,
    ) -> None:
        super().__init__()
        parse_variant(variant, name=type(self).__name__.lower())
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        for name, value in (("gd_margin", gd_margin), ("temperature", temperature), ("ratio", ratio)):
            check_positive(name, value)
        check_positive("power", power)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.variant, self.lam, self.gd_margin = variant, lam, gd_margin
        self.temperature, self.ratio, self.weighting, self.power = temperature, ratio, weighting, power


@register_loss("barlowtwins")
class BarlowTwins(SampleWise):
    """Sample-wise Barlow Twins; ``variant`` ori | mod | subset of w_gd.w_w.w_r; ``lam`` lambda."""

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return barlow_twins(
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
