"""The machinery Barlow Twins and VICReg share as paper B's sample-wise surrogates (papers.md 1.6).

Both are L = D(u, v) + D(v, u) on the normalised (and, with ``w_gd``, gated) views, one direction
D(u1, u2) = sum_i [pos_i + lam sum_{k != i} w_ik u1_i . sg(u1_k)]. They differ only in where the
weights w come from (the other view for Barlow Twins, the same view for VICReg) and in the ori
positive (per-dimension weights for Barlow Twins). :func:`sample_wise` runs the gate and the two
directions; the loss files pass those two choices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

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
)
from csrl.losses.registry import Loss, LossOutput

WEIGHTINGS = ("exp", "power")


def sample_weights(s: Tensor, switches: frozenset[str], *, temperature: float, weighting: str, power: float) -> Tensor:
    """Weights w_ik of the sample-wise Barlow Twins / VICReg surrogates, (B, B), from detached cosines ``s``.

    ori: w = s/N * 2/N (linear, diagonal included). ``w_w``: w = e^{s/temperature} (``weighting="exp"``)
    or clamp_min(s, 1e-4)^power (``"power"``), divided by its off-diagonal total over the whole matrix.
    The diagonal is returned but :func:`sample_wise_direction` drops it (a radial, gradient-free term).
    """
    n = s.shape[0]
    if "w_w" not in switches:
        return s * (2.0 / (n * n))
    if weighting == "exp":
        w = torch.exp((s - 1.0) / temperature)  # shifted by the max cosine 1; cancels in the normalisation
    elif weighting == "power":
        w = s.clamp_min(1e-4).pow(power)
    else:
        raise ValueError(f"weighting must be 'exp' or 'power', got {weighting!r}")
    return w / w.masked_fill(diag_mask(n, n, s.device), 0.0).sum()


def sample_wise_direction(
    u1: Tensor,
    u2: Tensor,
    weight: Tensor,
    *,
    pairs: tuple[str, str],
    switches: frozenset[str],
    lam: float,
    ratio: float,
    dim_weight: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """(positive, lambda * negative) of one direction of the Barlow Twins / VICReg surrogates (papers.md 1.6).

    u1: (N, D) normalised anchors, u2: their positives; ``pairs`` = (same-view tag, cross-view tag).
    negative = sum_{i, k != i} w_ik u1_i . sg(u1_k) (the k = i term of the paper's sum is dropped: it is a
    constant whose gradient is radial, removed by the normalisation).
    positive: ori, -sum_i sum_d a_d u1_id sg(u2_id) with a = ``dim_weight`` (Barlow Twins) or a_d = 2/N
    (VICReg, ``dim_weight=None``); ``w_r``, -lambda R sum_i (sum_{k != i} w_ik) u1_i . u2_i, without
    stop-gradient on u2 (as the reference code).
    """
    n = u1.shape[0]
    same, cross = pairs
    weight = weight.masked_fill(diag_mask(n, n, u1.device), 0.0)
    negative = (weight * similarity(u1, u1.detach(), pair=same)).sum()
    if "w_r" in switches:
        positive = -(lam * ratio * weight.sum(dim=1) * similarity(u1, u2, pair=cross).diagonal()).sum()
    elif dim_weight is None:
        positive = -(2.0 / n) * similarity(u1, u2.detach(), pair=cross).diagonal().sum()
    else:
        positive = -(u1 * u2.detach() * dim_weight).sum()
    return positive, lam * negative


def sample_wise(
    z1: Tensor,
    z2: Tensor,
    hard_neg: Tensor | None,
    *,
    name: str,
    weights_from: Literal["other", "same"],
    per_dimension: bool,
    variant: str,
    lam: float,
    gd_margin: float,
    temperature: float,
    ratio: float,
    weighting: str,
    power: float,
) -> LossOutput:
    """Both directions of a sample-wise surrogate; terms ``"positive"``, ``"negative"``.

    ``weights_from``: w from the cosines of the other view (Barlow Twins) or of the same view (VICReg).
    ``per_dimension``: the ori positive weights dimension d by a_d = (1 - (1 - lam) C_dd) 2/N,
    C = sg(u1)^T sg(u2) / N (Barlow Twins); else a_d = 2/N.
    """
    check_pair(z1, z2, hard_neg, name=name)
    check_no_hard_neg(hard_neg, name)
    switches = parse_variant(variant, name=name)
    u, v = gated_views(z1, z2, switches, gd_margin)
    n = u.shape[0]
    positive, negative = u.new_zeros(()), u.new_zeros(())
    for a, b, pairs in ((u, v, ("00", "01")), (v, u, ("11", "10"))):
        ad, bd = a.detach(), b.detach()
        src = bd if weights_from == "other" else ad
        w = sample_weights(src @ src.T, switches, temperature=temperature, weighting=weighting, power=power)
        dim_weight = (1 - (1 - lam) * (ad * bd).sum(dim=0) / n) * (2.0 / n) if per_dimension else None
        p, q = sample_wise_direction(
            a, b, w, pairs=pairs, switches=switches, lam=lam, ratio=ratio, dim_weight=dim_weight
        )
        positive, negative = positive + p, negative + q
    return LossOutput(positive + negative, {"positive": positive.detach(), "negative": negative.detach()})


class SampleWise(Loss):
    """Shared hyper-parameters and traits of the Barlow Twins and VICReg surrogates."""

    in_batch_negatives: ClassVar[bool] = True  # w couples every pair of rows of the batch
    hard_negatives: ClassVar[bool] = False
    paper_defaults: ClassVar[Mapping[str, Any]] = {"temperature": 0.05}  # per-backbone rows: presets

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

    def hyper_parameters(self) -> dict[str, Any]:
        """The keyword arguments of the loss function, from this module's attributes."""
        return {
            "variant": self.variant,
            "lam": self.lam,
            "gd_margin": self.gd_margin,
            "temperature": self.temperature,
            "ratio": self.ratio,
            "weighting": self.weighting,
            "power": self.power,
        }
