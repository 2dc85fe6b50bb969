"""Barlow Twins as a sample-wise surrogate on normalised embeddings (paper B, papers.md 1.6), ori and mod."""

from __future__ import annotations

from torch import Tensor

from csrl.losses.registry import LossOutput, register_loss
from csrl.losses.sample_wise import SampleWise, sample_wise


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
    Relations: VICReg uses the same view's similarities for w and a_d = 2/N (:mod:`csrl.losses.sample_wise`).
    """
    return sample_wise(
        z1,
        z2,
        hard_neg,
        name="barlowtwins",
        weights_from="other",
        per_dimension=True,
        variant=variant,
        lam=lam,
        gd_margin=gd_margin,
        temperature=temperature,
        ratio=ratio,
        weighting=weighting,
        power=power,
    )


@register_loss("barlowtwins")
class BarlowTwins(SampleWise):
    """Sample-wise Barlow Twins; ``variant`` ori | mod | subset of w_gd.w_w.w_r; ``lam`` lambda.

    Traits (from :class:`SampleWise`): in-batch negatives, no hard negatives, no closed form; paper B's
    rows are the presets ``barlowtwins-{ori,mod}-{bert,roberta}``.
    """

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return barlow_twins(z1, z2, hard_neg, **self.hyper_parameters())
