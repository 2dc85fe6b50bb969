"""Component-built surrogate of paper B, Section 3.2 (papers.md 1.5): set GD, W and R independently.

Per direction, with sg = stop-gradient and the weights and the mask computed from detached cosines,

    L = (1/B) sum_{i in A} sum_{j != i} W_ij (h_i . sg(h_j') - R h_i . sg(h_i'))
    A = {i : s_ii' - max_{j != i} s_ij' < m}

so that dL/dh_i = (1/B) 1[i in A] sum_{j != i} W_ij (h_j' - R h_i'): GD is the 0/1 mask, W the chosen
weights, R the constant ``ratio``, scale c = 1 (papers.md 1.3). The loss is symmetrised: the second
direction swaps the views (rows view 1, columns sg(view 0)) and the two are summed.
Normalisation: the reference divides by the number of active entries |A| B; csrl divides by B so GD
stays a pure 0/1 switch (the constant B is immaterial under Adam; the |A| factor is not reproduced).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from csrl.losses._functional import (
    ClosedForm,
    check_pair,
    check_positive,
    negatives_max,
    off_diagonal_power,
    off_diagonal_softmax,
    similarity,
    unit_scale,
)
from csrl.losses.registry import Loss, LossOutput, register_loss

WEIGHTINGS = ("softmax", "power", "uniform")


def surrogate_weights(s: Tensor, *, weighting: str, temperature: float, power: float) -> Tensor:
    """W over off-diagonal columns (rows sum to 1, zero diagonal) from detached cosines ``s``, (B, B).

    softmax: softmax_{j != i}(s_ij/temperature); power: clamp_min(s, 1e-4)^power normalised;
    uniform: 1/(B - 1).
    """
    if weighting == "softmax":
        return off_diagonal_softmax(s, temperature)
    if weighting == "power":
        return off_diagonal_power(s, power)
    if weighting == "uniform":
        return off_diagonal_power(torch.ones_like(s), 1.0)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def surrogate_gd(s_pos: Tensor, s_hard: Tensor, gd_margin: float) -> Tensor:
    """GD = 1[s_pos - s_hard < m] as a bool mask: the anchors i in A that contribute."""
    return s_pos - s_hard < gd_margin


def surrogate_direction(
    h: Tensor,
    h_other: Tensor,
    *,
    pair: str,
    gd_margin: float,
    ratio: float,
    weighting: str,
    temperature: float,
    power: float,
) -> Tensor:
    """One direction of the surrogate: rows ``h`` (normalised anchors), columns sg(``h_other``), scalar."""
    s = similarity(h, h_other.detach(), pair=pair)
    sd = s.detach()
    active = surrogate_gd(sd.diagonal(), negatives_max(sd), gd_margin)
    w = surrogate_weights(sd, weighting=weighting, temperature=temperature, power=power)
    per_anchor = (w * s).sum(dim=1) - ratio * s.diagonal()
    return torch.where(active, per_anchor, torch.zeros_like(per_anchor)).sum() / h.shape[0]


def surrogate(
    z1: Tensor,
    z2: Tensor,
    hard_neg: Tensor | None = None,
    *,
    gd_margin: float = 0.30,
    ratio: float = 1.0,
    temperature: float = 0.05,
    weighting: str = "softmax",
    power: float = 4.0,
) -> LossOutput:
    """Symmetrised surrogate (module docstring); terms ``"view0"`` (anchors z1) and ``"view1"`` (anchors z2).

    z1, z2: (batch, dim) raw head outputs; hard negatives are not supported.
    """
    check_pair(z1, z2, hard_neg, name="surrogate")
    if hard_neg is not None:
        raise ValueError("surrogate: hard negatives are not supported (use infonce/arccon/mpt/met/mat)")
    h1 = F.normalize(z1, dim=-1)
    h2 = F.normalize(z2, dim=-1)
    l0, l1 = (
        surrogate_direction(
            a,
            b,
            pair=pair,
            gd_margin=gd_margin,
            ratio=ratio,
            weighting=weighting,
            temperature=temperature,
            power=power,
        )
        for a, b, pair in ((h1, h2, "01"), (h2, h1, "10"))
    )
    total = l0 + l1
    return LossOutput(total, {"view0": l0.detach(), "view1": l1.detach()})


@register_loss("surrogate")
class Surrogate(Loss):
    """Paper B's GD/W/R surrogate. ``gd_margin`` m (0.30; >= 2 never dissipates), ``ratio`` R (1.0),
    ``weighting`` in {softmax, power, uniform} with ``temperature`` (0.05) or ``power`` (4.0)."""

    in_batch_negatives: ClassVar[bool] = True
    hard_negatives: ClassVar[bool] = False
    # the component study's scripts (papers.md 1.5): m = 0.30, R = 1, tau = 0.05, softmax W
    paper_defaults: ClassVar[Mapping[str, Any]] = {
        "gd_margin": 0.30,
        "ratio": 1.0,
        "temperature": 0.05,
        "weighting": "softmax",
    }

    def __init__(
        self,
        gd_margin: float = 0.30,
        ratio: float = 1.0,
        temperature: float = 0.05,
        weighting: str = "softmax",
        power: float = 4.0,
    ) -> None:
        super().__init__()
        check_positive("gd_margin", gd_margin)
        check_positive("ratio", ratio)
        check_positive("temperature", temperature)
        check_positive("power", power)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        self.gd_margin = gd_margin
        self.ratio = ratio
        self.temperature = temperature
        self.weighting = weighting
        self.power = power

    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return surrogate(
            z1,
            z2,
            hard_neg,
            gd_margin=self.gd_margin,
            ratio=self.ratio,
            temperature=self.temperature,
            weighting=self.weighting,
            power=self.power,
        )

    def paradigm_closed_form(self, s: Tensor) -> ClosedForm:
        """GD = :func:`surrogate_gd`, W = :func:`surrogate_weights`, R = ``ratio`` (the loss's own definitions)."""
        if s.shape[1] != s.shape[0]:
            raise ValueError("surrogate: hard negatives are not supported")
        gd = surrogate_gd(s.diagonal(), negatives_max(s), self.gd_margin).to(s.dtype)
        w = surrogate_weights(s, weighting=self.weighting, temperature=self.temperature, power=self.power)
        return ClosedForm(gd, w, torch.full_like(gd, self.ratio))

    def gd_scale(self, cos: Tensor) -> Tensor:
        """c = 1."""
        return unit_scale(cos)
