"""ESimCSE's loss: InfoNCE over [in-batch positives, momentum queue], against a loop written from the formula."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss, loss_traits
from csrl.losses.esimcse import esimcse
from csrl.losses.infonce import info_nce
from csrl.losses.step_inputs import StepInputs, step_inputs


def _naive(z1: Tensor, z2: Tensor, queue: Tensor, tau: float) -> Tensor:
    """L = mean_i -log e^{cos(h_i, h_i+)/tau} / (sum_j e^{cos(h_i, h_j+)/tau} + sum_m e^{cos(h_i, q_m)/tau})."""

    def cos(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum() / (a.norm() * b.norm())

    total = z1.new_zeros(())
    for i in range(z1.shape[0]):
        pos = torch.exp(cos(z1[i], z2[i]) / tau)
        denom = sum(torch.exp(cos(z1[i], z2[j]) / tau) for j in range(z2.shape[0]))
        denom = denom + sum(torch.exp(cos(z1[i], queue[m]) / tau) for m in range(queue.shape[0]))
        total = total - torch.log(pos / denom)
    return total / z1.shape[0]


def _views(seed: int, b: int = 5, d: int = 7, m: int = 9) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(b, d, generator=g, dtype=torch.float64)
    return z1, z2, torch.randn(m, d, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_value_and_gradient_match_the_formula(tau: float) -> None:
    z1, z2, queue = _views(0)
    a, b = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    out = esimcse(a, b, queue, temperature=tau)
    ga, gb = torch.autograd.grad(out.total, (a, b))
    ra, rb = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    ref = _naive(ra, rb, queue, tau)
    ref_ga, ref_gb = torch.autograd.grad(ref, (ra, rb))
    torch.testing.assert_close(out.total, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ga, ref_ga, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gb, ref_gb, rtol=1e-9, atol=1e-12)
    assert out.terms["esimcse"] == out.total.detach()


def test_the_queue_gets_no_gradient_and_matters() -> None:
    z1, z2, queue = _views(1)
    q = queue.clone().requires_grad_(True)
    out = esimcse(z1, z2, q, temperature=0.05)
    assert not out.total.requires_grad  # detached inside: only the views carry gradient
    without = esimcse(z1, z2, None, temperature=0.05).total
    assert out.total > without  # more negatives, larger loss


def test_without_a_queue_it_is_infonce() -> None:
    z1, z2, _ = _views(2)
    a = esimcse(z1, z2, None, temperature=0.07).total
    torch.testing.assert_close(a, info_nce(z1, z2, temperature=0.07).total, rtol=0, atol=0)
    empty = torch.zeros(0, z1.shape[1], dtype=z1.dtype)
    torch.testing.assert_close(esimcse(z1, z2, empty, temperature=0.07).total, a, rtol=0, atol=0)


def test_module_traits_and_parameters() -> None:
    loss = build_loss("esimcse")
    assert step_inputs(loss) == StepInputs(dup_rate=0.32, queue_ratio=2.5, momentum=0.995)
    assert step_inputs(build_loss("infonce")) == StepInputs() and not StepInputs().any
    traits = loss_traits("esimcse")
    assert traits.in_batch_negatives and not traits.hard_negatives and not traits.has_closed_form
    z1, z2, queue = _views(4)
    torch.testing.assert_close(loss(z1, z2, queue=queue).total, esimcse(z1, z2, queue, temperature=0.05).total)
    with pytest.raises(ValueError, match="hard negatives are not supported"):
        loss(z1, z2, z1)
    with pytest.raises(ValueError, match="queue must be"):
        loss(z1, z2, queue=queue[:, :3])
    for bad in ({"dup_rate": 1.5}, {"momentum": -0.1}, {"queue_ratio": -1.0}, {"temperature": 0.0}):
        with pytest.raises(CsrlError, match=next(iter(bad))):
            build_loss("esimcse", **bad)
