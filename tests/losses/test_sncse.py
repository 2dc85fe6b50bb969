"""SNCSE: value and gradient against a naive per-anchor loop of the paper's formula, its relation to InfoNCE,
the paradigm's closed form against autograd, the declared traits and the parameter checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from csrl.losses import build_loss, loss_traits
from csrl.losses.infonce import info_nce
from csrl.losses.paradigm import closed_form, effective_decomposition, paradigm_gradient
from csrl.losses.sncse import sncse

B, D = 8, 5


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum() / (a.norm() * b.norm())


def naive_sncse(z1: Tensor, z2: Tensor, neg: Tensor, tau: float, alpha: float, beta: float, lam: float) -> Tensor:
    """The paper's formula anchor by anchor: -log(e^{cos(h_i,h_i')/tau} / sum_j e^{cos(h_i,h_j')/tau})
    + lam * (max(0, Delta_i + alpha) + max(0, -Delta_i - beta)), Delta_i = cos(h_i, h_i^-) - cos(h_i, h_i');
    both terms averaged over the anchors."""
    n = z1.shape[0]
    total = z1.new_zeros(())
    for i in range(n):
        denom = sum(torch.exp(_cos(z1[i], z2[j]) / tau) for j in range(n))
        nce = -torch.log(torch.exp(_cos(z1[i], z2[i]) / tau) / denom)
        delta = _cos(z1[i], neg[i]) - _cos(z1[i], z2[i])
        bml = torch.clamp(delta + alpha, min=0) + torch.clamp(-delta - beta, min=0)
        total = total + nce + lam * bml
    return total / n


def _views(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(B, D, generator=g, dtype=torch.float64)
    z2 = z1 + 0.8 * torch.randn(B, D, generator=g, dtype=torch.float64)
    neg = z1 + 1.0 * torch.randn(B, D, generator=g, dtype=torch.float64)
    return z1, z2, neg


def _gates(z1: Tensor, z2: Tensor, neg: Tensor, alpha: float, beta: float) -> set[int]:
    h1, h2, hn = (torch.nn.functional.normalize(z, dim=-1) for z in (z1, z2, neg))
    delta = (h1 * hn).sum(1) - (h1 * h2).sum(1)
    return {1 if d > -alpha else -1 if d < -beta else 0 for d in delta.tolist()}


PARAMS = {"temperature": 0.1, "alpha": 0.05, "beta": 0.25, "bml_weight": 0.7}


def _mixed() -> tuple[Tensor, Tensor, Tensor]:
    """Views whose anchors cover the three BML regimes (above the band, inside it, below it)."""
    for seed in range(500):
        views = _views(seed)
        if _gates(*views, PARAMS["alpha"], PARAMS["beta"]) == {-1, 0, 1}:
            return views
    raise AssertionError("no seed covers the three regimes")


def test_value_and_gradient_equal_a_naive_loop() -> None:
    z1, z2, neg = _mixed()
    params = [t.clone().requires_grad_(True) for t in (z1, z2, neg)]
    ours = build_loss("sncse", **PARAMS)(*params).total
    ref_params = [t.clone().requires_grad_(True) for t in (z1, z2, neg)]
    ref = naive_sncse(*ref_params, PARAMS["temperature"], PARAMS["alpha"], PARAMS["beta"], PARAMS["bml_weight"])
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(ours, params)
    ref_grads = torch.autograd.grad(ref, ref_params)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    assert grads[2].abs().sum() > 0  # the soft negatives get a gradient (through BML only)


def test_terms_and_the_relation_to_infonce() -> None:
    z1, z2, neg = _mixed()
    out = build_loss("sncse", **PARAMS)(z1, z2, neg)
    nce = info_nce(z1, z2, temperature=PARAMS["temperature"]).total  # soft negatives are not in the denominator
    torch.testing.assert_close(out.terms["infonce"], nce)
    torch.testing.assert_close(out.total, nce + PARAMS["bml_weight"] * out.terms["bml"])
    h1, h2, hn = (torch.nn.functional.normalize(z, dim=-1) for z in (z1, z2, neg))
    torch.testing.assert_close(out.terms["soft_gap"], ((h1 * hn).sum(1) - (h1 * h2).sum(1)).mean())
    # lambda = 0 is InfoNCE; without soft negatives it is InfoNCE too
    torch.testing.assert_close(sncse(z1, z2, neg, temperature=0.1, bml_weight=0.0).total, nce)
    torch.testing.assert_close(sncse(z1, z2, temperature=0.1).total, nce)


def test_bml_is_zero_inside_the_band_and_linear_outside() -> None:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # cos(h, h+) = 1
    for cos_neg, expected in ((0.8, 0.0), (0.95, 0.05), (0.6, 0.1), (0.9, 0.0), (0.7, 0.0)):
        angle = math.acos(cos_neg)
        neg = torch.tensor([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]],
                           dtype=torch.float64)  # fmt: skip
        out = sncse(z1, z2, neg, alpha=0.1, beta=0.3, bml_weight=1.0)
        torch.testing.assert_close(out.terms["bml"], torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0)


def test_closed_form_equals_autograd_and_the_effective_decomposition() -> None:
    loss = build_loss("sncse", **PARAMS)
    z1, z2, neg = _mixed()
    z = z1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(z, z2, neg).total, z)
    cf = closed_form(loss, z1, z2, neg)
    torch.testing.assert_close(paradigm_gradient(cf, z1, z2, neg), g, atol=1e-10, rtol=0)
    torch.testing.assert_close(cf.r, torch.ones(B, dtype=torch.float64))
    torch.testing.assert_close(cf.w_cross.sum(1), torch.ones(B, dtype=torch.float64))
    own = cf.w_cross[:, B:].diagonal()  # the weight on each anchor's own negation: signed, by the gate
    assert (own < 0).any() and (own > 0).any() and (own == 0).any()
    ef = effective_decomposition(loss, z1, z2, neg)
    torch.testing.assert_close(ef.gd, cf.gd, atol=1e-9, rtol=0)
    torch.testing.assert_close(ef.w_cross, cf.w_cross, atol=1e-7, rtol=0)
    torch.testing.assert_close(ef.r, cf.r, atol=1e-7, rtol=1e-7)
    assert ef.other_share.max() < 1e-9
    # without soft negatives the closed form is InfoNCE's
    torch.testing.assert_close(closed_form(loss, z1, z2).gd, closed_form(build_loss("infonce", temperature=0.1),
                                                                          z1, z2).gd)  # fmt: skip


def test_traits_and_defaults() -> None:
    traits = loss_traits("sncse")
    assert traits.negation_view and traits.hard_negatives and traits.in_batch_negatives and traits.has_closed_form
    assert dict(traits.paper_defaults) == {"temperature": 0.05, "alpha": 0.1, "beta": 0.3, "bml_weight": 1e-3}
    assert not loss_traits("infonce").negation_view


@pytest.mark.parametrize(
    "params,message",
    [
        ({"alpha": 0.4, "beta": 0.3}, "alpha must be <= beta"),
        ({"alpha": -0.1}, "alpha must be a cosine gap"),
        ({"beta": 2.5}, "beta must be a cosine gap"),
        ({"bml_weight": -1.0}, "bml_weight must be a finite number >= 0"),
        ({"bml_weight": float("nan")}, "bml_weight"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_parameters(params: dict[str, float], message: str) -> None:
    from csrl.errors import CsrlError

    with pytest.raises(CsrlError, match=message):
        build_loss("sncse", **params)
