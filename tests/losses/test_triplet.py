"""MPT, MET, MAT against loop re-implementations of their formulas (values and gradients), errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss
from csrl.losses.triplet import mat, met, mpt

B, D = 6, 8


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return a.dot(b) / (a.norm() * b.norm())


def _dist(a: Tensor, b: Tensor) -> Tensor:
    return torch.sqrt(torch.clamp(2 - 2 * _cos(a, b), min=1e-4))


def _angle(a: Tensor, b: Tensor) -> Tensor:
    return torch.acos(_cos(a, b))


def ref_triplet(kind: str, z1: Tensor, z2: Tensor, hn: Tensor | None, m: float) -> tuple[Tensor, list[float]]:
    """Mean over anchors of the hinge; also each anchor's hinge argument (to stay away from the kink)."""
    cands = [z2[j] for j in range(B)] + ([] if hn is None else [hn[j] for j in range(B)])
    total, args = z1.new_zeros(()), []
    for i in range(B):
        negs = [c for j, c in enumerate(cands) if j != i]
        if kind == "mpt":
            arg = max(_cos(z1[i], c) for c in negs) - _cos(z1[i], z2[i]) + m
        elif kind == "met":
            arg = _dist(z1[i], z2[i]) - min(_dist(z1[i], c) for c in negs) + m
        else:
            arg = _angle(z1[i], z2[i]) - min(_angle(z1[i], c) for c in negs) + m
        args.append(float(arg.detach()))
        total = total + torch.clamp(arg, min=0.0)
    return total / B, args


FNS: dict[str, Callable[..., object]] = {"mpt": mpt, "met": met, "mat": mat}
MARGINS = {"mpt": 0.23, "met": 0.45, "mat": 0.15 * math.pi}


def _views_away_from_kink(kind: str, hard: bool, want_inactive: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Random views whose hinge arguments are all at least 1e-3 from 0, with active and inactive anchors."""
    for seed in range(500):
        g = torch.Generator().manual_seed(seed)
        z1 = torch.randn(B, D, generator=g, dtype=torch.float64)
        z2 = z1 + 0.5 * torch.randn(B, D, generator=g, dtype=torch.float64)
        hn = torch.randn(B, D, generator=g, dtype=torch.float64) if hard else None
        _, args = ref_triplet(kind, z1, z2, hn, MARGINS[kind])
        active = [a > 0 for a in args]
        if min(abs(a) for a in args) > 1e-3 and any(active) and (not want_inactive or not all(active)):
            return z1, z2, hn
    raise AssertionError("no suitable seed")


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("kind", ["mpt", "met", "mat"])
def test_value_and_gradient_match_reference(kind: str, hard: bool) -> None:
    z1, z2, hn = _views_away_from_kink(kind, hard, want_inactive=True)
    args = [t.clone().requires_grad_(True) for t in (z1, z2) + ((hn,) if hn is not None else ())]
    out = FNS[kind](args[0], args[1], args[2] if hard else None, margin=MARGINS[kind])
    ref_args = [t.clone().requires_grad_(True) for t in args]
    ref, _ = ref_triplet(kind, ref_args[0], ref_args[1], ref_args[2] if hard else None, MARGINS[kind])
    total = out.total  # type: ignore[attr-defined]
    assert total.item() == pytest.approx(ref.item(), abs=1e-6)
    for a, b in zip(torch.autograd.grad(total, args), torch.autograd.grad(ref, ref_args), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["mpt", "met", "mat"])
def test_hard_negatives_are_candidates(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    z1 = torch.eye(B, D, dtype=torch.float64) + 0.1 * torch.randn(B, D, generator=g, dtype=torch.float64)
    z2 = z1 + 0.05 * torch.randn(B, D, generator=g, dtype=torch.float64)
    assert build_loss(kind)(z1, z2).total.item() == 0.0  # positives far closer than in-batch negatives
    # A hard negative equal to the positive is the hardest candidate: every hinge argument is exactly m.
    out = build_loss(kind)(z1, z2, z2.clone())
    assert out.total.item() == pytest.approx(MARGINS[kind], abs=1e-6)


@pytest.mark.parametrize("kind", ["mpt", "met", "mat"])
def test_margin_zero_and_invariance(kind: str) -> None:
    z1, z2, _ = _views_away_from_kink(kind, False, want_inactive=False)
    loss = build_loss(kind)
    assert loss(z1 * 2.0, z2 * 0.3).total.item() == pytest.approx(loss(z1, z2).total.item(), abs=1e-10)
    perm = torch.randperm(B)
    assert loss(z1[perm], z2[perm]).total.item() == pytest.approx(loss(z1, z2).total.item(), abs=1e-10)
    orth = torch.eye(B, D, dtype=torch.float64)
    assert build_loss(kind, margin=0.0)(orth, orth).total.item() == 0.0


@pytest.mark.parametrize(("kind", "bad"), [("mpt", -0.1), ("mpt", 2.5), ("met", -1.0), ("mat", 4.0)])
def test_errors(kind: str, bad: float) -> None:
    with pytest.raises(CsrlError, match="margin"):
        build_loss(kind, margin=bad)
    z = torch.randn(1, 4)
    with pytest.raises(ValueError, match="batch size"):
        build_loss(kind)(z, z)
    with pytest.raises(ValueError, match="z1 and z2"):
        build_loss(kind)(torch.randn(3, 4), torch.randn(3, 5))
