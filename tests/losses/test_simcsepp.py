"""SimCSE++'s loss: off-dropout InfoNCE and dimension-wise contrastive learning against loops from the formulas."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss, loss_traits
from csrl.losses.infonce import info_nce
from csrl.losses.simcsepp import dimension_contrast, off_dropout_info_nce, simcsepp
from csrl.losses.step_inputs import StepInputs, step_inputs

EPS = 1e-5


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum() / (a.norm() * b.norm())


def _naive_off_dropout(z1: Tensor, z2: Tensor, z0: Tensor, tau: float) -> Tensor:
    """mean_i -log e^{cos(h_i, h_i+)/tau} / (e^{cos(h_i, h_i+)/tau} + sum_{j != i} e^{cos(h0_i, h0_j)/tau})."""
    b = z1.shape[0]
    total = z1.new_zeros(())
    for i in range(b):
        pos = torch.exp(_cos(z1[i], z2[i]) / tau)
        neg = sum(torch.exp(_cos(z0[i], z0[j]) / tau) for j in range(b) if j != i)
        total = total - torch.log(pos / (pos + neg))
    return total / b


def _naive_dcl(z1: Tensor, z2: Tensor, tau: float) -> Tensor:
    """Columns standardised with the biased variance (+1e-5); C_kl = sum_n a_nk b_nl / B;
    L = (1/D) sum_k [-C_kk/tau + log sum_l e^{C_kl/tau}]."""
    b, d = z1.shape

    def standardised(z: Tensor) -> list[list[Tensor]]:
        cols = []
        for k in range(d):
            col = [z[n, k] for n in range(b)]
            mean = sum(col) / b
            var = sum((x - mean) ** 2 for x in col) / b
            cols.append([(x - mean) / torch.sqrt(var + EPS) for x in col])
        return cols

    a, c = standardised(z1), standardised(z2)
    total = z1.new_zeros(())
    for k in range(d):
        row = [sum(a[k][n] * c[m][n] for n in range(b)) / b / tau for m in range(d)]
        total = total - row[k] + torch.log(sum(torch.exp(x) for x in row))
    return total / d


def _views(seed: int, b: int = 6, d: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=torch.float64)
    z2 = z1 + 0.4 * torch.randn(b, d, generator=g, dtype=torch.float64)
    z0 = z1 + 0.2 * torch.randn(b, d, generator=g, dtype=torch.float64)  # the dropout-free view: near the anchors
    return z1, z2, z0


def _grads(fn, *tensors: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:  # type: ignore[no-untyped-def]
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    value = fn(*leaves)
    return value, torch.autograd.grad(value, leaves)


@pytest.mark.parametrize("tau", [0.05, 0.3])
def test_off_dropout_term_matches_the_formula(tau: float) -> None:
    z1, z2, z0 = _views(0)
    val, grads = _grads(lambda a, b, c: off_dropout_info_nce(a, b, c, temperature=tau), z1, z2, z0)
    ref, ref_grads = _grads(lambda a, b, c: _naive_off_dropout(a, b, c, tau), z1, z2, z0)
    torch.testing.assert_close(val, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):  # anchors, positives and the dropout-free view
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)
    assert grads[2].abs().sum() > 0  # the dropout-free forward is trained too (not detached)


@pytest.mark.parametrize("tau", [5.0, 0.5])
def test_dcl_matches_the_formula(tau: float) -> None:
    z1, z2, _ = _views(1)
    val, grads = _grads(lambda a, b: dimension_contrast(a, b, temperature=tau), z1, z2)
    ref, ref_grads = _grads(lambda a, b: _naive_dcl(a, b, tau), z1, z2)
    torch.testing.assert_close(val, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-12)


def test_dcl_is_invariant_to_per_dimension_scale_and_shift() -> None:
    z1, z2, _ = _views(2)
    gen = torch.Generator().manual_seed(7)  # its own draw: the global RNG's state depends on the tests before
    scale = torch.rand(z1.shape[1], dtype=z1.dtype, generator=gen) + 0.5
    shift = torch.randn(z1.shape[1], dtype=z1.dtype, generator=gen)
    a = dimension_contrast(z1, z2, temperature=5.0)
    b = dimension_contrast(z1 * scale + shift, z2 * scale - shift, temperature=5.0)
    # equal up to the 1e-5 added to each variance (relative effect ~1e-5 / (scale^2 var) >= 4e-5 at scale 0.5)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)


def test_total_and_terms() -> None:
    z1, z2, z0 = _views(3)
    out = simcsepp(z1, z2, z0, temperature=0.05, dcl_weight=0.1, dcl_temperature=5.0)
    off = off_dropout_info_nce(z1, z2, z0, temperature=0.05)
    dcl = dimension_contrast(z1, z2, temperature=5.0)
    torch.testing.assert_close(out.total, off + 0.1 * dcl, rtol=0, atol=0)
    assert out.terms == {"infonce": off, "dcl": dcl}
    # without a clean view: SimCSE's InfoNCE (+ DCL); with dcl_weight 0 as well: SimCSE exactly
    plain = simcsepp(z1, z2, None, temperature=0.05, dcl_weight=0.0)
    torch.testing.assert_close(plain.total, info_nce(z1, z2, temperature=0.05).total, rtol=0, atol=0)
    assert set(plain.terms) == {"infonce"}


def test_module_traits_and_parameters() -> None:
    loss = build_loss("simcsepp")
    assert step_inputs(loss) == StepInputs(clean_view=True)
    assert step_inputs(build_loss("simcsepp", off_dropout=False)) == StepInputs()
    traits = loss_traits("simcsepp")
    assert traits.in_batch_negatives and not traits.hard_negatives and not traits.has_closed_form
    z1, z2, z0 = _views(4)
    torch.testing.assert_close(loss(z1, z2, clean=z0).total, simcsepp(z1, z2, z0).total, rtol=0, atol=0)
    with pytest.raises(ValueError, match="hard negatives are not supported"):
        loss(z1, z2, z0)
    with pytest.raises(ValueError, match="clean must have the shape"):
        loss(z1, z2, clean=z0[:3])
    for bad in ({"dcl_weight": -1.0}, {"dcl_temperature": 0.0}, {"temperature": -0.05}):
        with pytest.raises(CsrlError, match=next(iter(bad))):
            build_loss("simcsepp", **bad)
