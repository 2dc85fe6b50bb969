"""ArcCon against a loop re-implementation of its formula; relation to InfoNCE; error paths."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss
from csrl.losses.arccon import ArcCon, arccon
from csrl.losses.infonce import info_nce

B, D = 6, 8


def _views(seed: int, hard: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(B, D, generator=g, dtype=torch.float64)
    z2 = z1 + 0.7 * torch.randn(B, D, generator=g, dtype=torch.float64)
    hn = torch.randn(B, D, generator=g, dtype=torch.float64) if hard else None
    return z1, z2, hn


def ref_arccon(z1: Tensor, z2: Tensor, hn: Tensor | None, tau: float, u: float) -> Tensor:
    """-log( e^{cos(theta_ii + u)/tau} / (e^{cos(theta_ii + u)/tau} + sum_{j != i} e^{s_ij/tau}) ), loops."""
    cands = [z2[j] for j in range(B)] + ([] if hn is None else [hn[j] for j in range(B)])
    total = z1.new_zeros(())
    for i in range(B):
        a = z1[i] / z1[i].norm()
        pos = None
        negs = z1.new_zeros(())
        for j, c in enumerate(cands):
            s = a.dot(c / c.norm())
            if j == i:
                pos = torch.exp(torch.cos(torch.acos(s) + u) / tau)
            else:
                negs = negs + torch.exp(s / tau)
        assert pos is not None
        total = total - torch.log(pos / (pos + negs))
    return total / B


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize(("tau", "u"), [(0.05, math.pi / 18), (0.2, 0.3), (1.0, 0.05)])
def test_value_and_gradient_match_reference(hard: bool, tau: float, u: float) -> None:
    z1, z2, hn = _views(5, hard)
    args = [t.clone().requires_grad_(True) for t in (z1, z2) + ((hn,) if hn is not None else ())]
    ours = arccon(args[0], args[1], args[2] if hard else None, temperature=tau, margin=u)
    ref_args = [t.clone().requires_grad_(True) for t in args]
    ref = ref_arccon(ref_args[0], ref_args[1], ref_args[2] if hard else None, tau, u)
    assert ours.total.item() == pytest.approx(ref.item(), abs=1e-6)
    for a, b in zip(torch.autograd.grad(ours.total, args), torch.autograd.grad(ref, ref_args), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_relations_and_invariances() -> None:
    z1, z2, hn = _views(6, True)
    # margin 0 is InfoNCE
    assert arccon(z1, z2, hn, temperature=0.1, margin=0.0).total.item() == pytest.approx(
        info_nce(z1, z2, hn, temperature=0.1).total.item(), abs=1e-9
    )
    # a margin makes the positive look farther: the loss grows with u
    values = [arccon(z1, z2, temperature=0.1, margin=u).total.item() for u in (0.0, 0.1, 0.3)]
    assert values == sorted(values) and values[0] < values[-1]
    # norm invariance
    loss = ArcCon()
    assert loss(z1 * 4.0, z2 * 0.5).total.item() == pytest.approx(loss(z1, z2).total.item(), abs=1e-10)
    # identical views keep a finite gradient (arccos argument clamped)
    z = z1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(z, z1.clone()).total, z)
    assert torch.isfinite(g).all()


def test_errors() -> None:
    z1, z2, _ = _views(7)
    with pytest.raises(ValueError, match="batch size"):
        arccon(z1[:1], z2[:1])
    with pytest.raises(ValueError, match="z1 and z2"):
        arccon(z1, z2[:4])
    for params in ({"temperature": 0.0}, {"margin": -0.1}, {"margin": 2.0}, {"margin": float("nan")}):
        with pytest.raises(CsrlError, match="arccon"):
            build_loss("arccon", **params)
