"""VICReg as a sample-wise surrogate on normalised embeddings (paper B, papers.md 1.6), ori and mod."""

from __future__ import annotations

from torch import Tensor

from csrl.losses.registry import LossOutput, register_loss
from csrl.losses.sample_wise import SampleWise, sample_wise


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
    return sample_wise(
        z1,
        z2,
        hard_neg,
        name="vicreg",
        weights_from="same",
        per_dimension=False,
        variant=variant,
        lam=lam,
        gd_margin=gd_margin,
        temperature=temperature,
        ratio=ratio,
        weighting=weighting,
        power=power,
    )


@register_loss("vicreg")
class VICReg(SampleWise):
    """Sample-wise VICReg; ``variant`` ori | mod | subset of w_gd.w_w.w_r; ``lam`` lambda.

    Traits (from :class:`SampleWise`): in-batch negatives, no hard negatives, no closed form; paper B's
    rows are the presets ``vicreg-{ori,mod}-{bert,roberta}``.
    """

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return vicreg(z1, z2, hard_neg, **self.hyper_parameters())
