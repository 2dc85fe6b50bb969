"""The GD/W/R surrogate of paper B (papers.md 1.5) against a loop re-implementation; its switches."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss
from csrl.losses.surrogate import surrogate

B, D = 7, 6


def _views(seed: int, noise: float = 0.6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(B, D, generator=g, dtype=torch.float64)
    return z1, z1 + noise * torch.randn(B, D, generator=g, dtype=torch.float64)


def _weights(s: list[list[float]], i: int, weighting: str, tau: float, power: float) -> list[float]:
    raw = []
    for j in range(B):
        if j == i:
            raw.append(0.0)
        elif weighting == "softmax":
            raw.append(math.exp(s[i][j] / tau))
        elif weighting == "power":
            raw.append(max(s[i][j], 1e-4) ** power)
        else:
            raw.append(1.0)
    total = sum(raw)
    return [r / total for r in raw]


def ref_direction(a: Tensor, b: Tensor, m: float, r: float, weighting: str, tau: float, power: float) -> Tensor:
    """(1/B) sum_{i in A} [sum_{j != i} W_ij h_i . sg(h_j') - R h_i . sg(h_i')], loops."""
    h = [a[i] / a[i].norm() for i in range(B)]
    hp = [(b[j] / b[j].norm()).detach() for j in range(B)]
    s = [[float(h[i].detach().dot(hp[j])) for j in range(B)] for i in range(B)]
    total = a.new_zeros(())
    for i in range(B):
        if s[i][i] - max(s[i][j] for j in range(B) if j != i) >= m:
            continue
        w = _weights(s, i, weighting, tau, power)
        total = total + sum(w[j] * h[i].dot(hp[j]) for j in range(B) if j != i) - r * h[i].dot(hp[i])
    return total / B


@pytest.mark.parametrize(
    ("m", "r", "weighting", "tau", "power"),
    [
        (0.3, 1.0, "softmax", 0.05, 4.0),
        (1.0, 2.0, "softmax", 0.3, 4.0),
        (0.2, 1.5, "power", 0.05, 4.0),
        (0.5, 0.5, "uniform", 0.05, 4.0),
        (3.0, 1.0, "power", 0.05, 2.0),
    ],
)
def test_value_and_gradient_match_reference(m: float, r: float, weighting: str, tau: float, power: float) -> None:
    z1, z2 = _views(0)
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    out = surrogate(a, b, gd_margin=m, ratio=r, weighting=weighting, temperature=tau, power=power)
    ra, rb = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    ref = ref_direction(ra, rb, m, r, weighting, tau, power) + ref_direction(rb, ra, m, r, weighting, tau, power)
    assert out.total.item() == pytest.approx(ref.item(), abs=1e-6)
    assert (out.terms["view0"] + out.terms["view1"]).item() == pytest.approx(out.total.item(), abs=1e-12)
    for x, y in zip(torch.autograd.grad(out.total, (a, b)), torch.autograd.grad(ref, (ra, rb)), strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_gd_mask_switches_anchors_off() -> None:
    z1, z2 = _views(1, noise=0.3)
    h1, h2 = torch.nn.functional.normalize(z1, dim=-1), torch.nn.functional.normalize(z2, dim=-1)
    s = h1 @ h2.T
    gap = s.diagonal() - s.masked_fill(torch.eye(B, dtype=torch.bool), -2).amax(1)
    m = float(gap.median())
    a = z1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(surrogate(a, z2, gd_margin=m).total, a)
    off = gap >= m
    assert off.any() and (~off).any()
    assert (g[off] == 0).all() and (g[~off].norm(dim=1) > 0).all()
    # m >= 2 never dissipates
    (g_all,) = torch.autograd.grad(surrogate(a, z2, gd_margin=2.5).total, a)
    assert (g_all.norm(dim=1) > 0).all()


def test_symmetry_and_ratio() -> None:
    z1, z2 = _views(2)
    loss = build_loss("surrogate", gd_margin=2.5)
    assert loss(z1, z2).total.item() == pytest.approx(loss(z2, z1).total.item(), abs=1e-12)
    # The ratio enters linearly: L(R) = L(0-pull) - R * mean_i s_ii' per direction (all anchors active).
    h1, h2 = torch.nn.functional.normalize(z1, dim=-1), torch.nn.functional.normalize(z2, dim=-1)
    pos = 2 * (h1 * h2).sum(1).mean()
    l1 = build_loss("surrogate", gd_margin=2.5, ratio=1.0)(z1, z2).total
    l2 = build_loss("surrogate", gd_margin=2.5, ratio=2.0)(z1, z2).total
    assert (l1 - l2).item() == pytest.approx(pos.item(), abs=1e-12)


def test_errors() -> None:
    z1, z2 = _views(3)
    with pytest.raises(ValueError, match="batch size"):
        surrogate(z1[:1], z2[:1])
    with pytest.raises(ValueError, match="hard negatives"):
        surrogate(z1, z2, z2)
    for params in ({"gd_margin": 0.0}, {"ratio": -1.0}, {"temperature": 0.0}, {"weighting": "cosine"}, {"power": 0}):
        with pytest.raises(CsrlError, match="surrogate"):
            build_loss("surrogate", **params)
