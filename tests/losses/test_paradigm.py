"""GD/W/R: closed forms against autograd, the effective decomposition against the closed forms, step_stats."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from csrl.losses import build_loss, preset_names
from csrl.losses.paradigm import (
    ACTIVE_THRESHOLD,
    closed_form,
    effective_decomposition,
    paradigm_gradient,
    step_stats,
)
from csrl.losses.registry import LossOutput
from csrl.losses.surrogate import Surrogate
from csrl.losses.triplet import MAT, MET, MPT

B, D = 8, 6
HINGES = (MPT, MET, MAT, Surrogate)
BUILTIN = ["arccon", "barlowtwins", "infonce", "mat", "met", "mhe", "mhs", "mpt", "surrogate", "vicreg"]
CLOSED = [
    ("infonce", {}),
    ("infonce", {"temperature": 0.2, "hard_negative_weight": 0.4}),
    ("arccon", {}),
    ("arccon", {"temperature": 0.3, "margin": 0.4}),
    ("mpt", {}),
    ("met", {}),
    ("mat", {}),
    ("surrogate", {"gd_margin": 0.15}),
    ("surrogate", {"gd_margin": 0.15, "weighting": "power", "ratio": 1.5}),
]


def _views(seed: int, hard: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(B, D, generator=g, dtype=torch.float64) * 2
    z2 = z1 + 1.2 * torch.randn(B, D, generator=g, dtype=torch.float64)
    hn = torch.randn(B, D, generator=g, dtype=torch.float64) if hard else None
    return z1, z2, hn


def _mixed_views(loss: nn.Module, hard: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Views with active and inactive anchors, every hinge at least 1e-3 away from its kink."""
    if not isinstance(loss, HINGES):
        return _views(0, hard)
    for seed in range(300):
        z1, z2, hn = _views(seed, hard)
        cf = closed_form(loss, z1, z2, hn)
        eps = 1e-4
        near_kink = any(
            closed_form(loss, z1 * (1 + eps * k), z2, hn).gd.ne(cf.gd).any() for k in (-1, 1)
        )  # crude: activity must be stable under tiny perturbations
        if cf.gd.min() < 1e-3 and cf.gd.max() > 0.5 and not near_kink:
            return z1, z2, hn
    raise AssertionError("no suitable views")


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize(("name", "params"), CLOSED)
def test_closed_form_equals_autograd(name: str, params: dict[str, float], hard: bool) -> None:
    if name == "surrogate" and hard:
        pytest.skip("surrogate has no hard negatives")
    loss = build_loss(name, **params)
    z1, z2, hn = _mixed_views(loss, hard)
    z = z1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(z, z2, hn).total, z)
    cf = closed_form(loss, z1, z2, hn)
    torch.testing.assert_close(paradigm_gradient(cf, z1, z2, hn), g, atol=1e-5, rtol=0)
    assert ((cf.gd >= 0) & (cf.gd <= 1)).all()
    torch.testing.assert_close(cf.w_cross.sum(1), torch.ones(B, dtype=torch.float64))
    if name in ("mpt", "met", "mat", "surrogate"):
        inactive = cf.gd == 0
        assert inactive.any() and (~inactive).any(), "test needs both kinds of anchors"
        assert (g[inactive] == 0).all()
    # the effective decomposition read off autograd agrees with the closed form
    ef = effective_decomposition(loss, z1, z2, hn)
    torch.testing.assert_close(ef.gd, cf.gd, atol=1e-9, rtol=0)
    act = cf.gd > ACTIVE_THRESHOLD
    torch.testing.assert_close(ef.w_cross[act], cf.w_cross[act], atol=1e-7, rtol=0)
    torch.testing.assert_close(ef.r[act], cf.r[act], atol=1e-7, rtol=1e-7)
    assert ef.other_share.max() < 1e-9 and ef.w_same[act].abs().max() == 0


def test_infonce_and_arccon_closed_form_values() -> None:
    z1, z2, _ = _views(1, False)
    h1, h2 = (torch.nn.functional.normalize(z, dim=-1) for z in (z1, z2))
    s = h1 @ h2.T
    p = torch.softmax(s / 0.05, dim=1)
    cf = closed_form(build_loss("infonce"), z1, z2)
    torch.testing.assert_close(cf.gd, 1 - p.diagonal())
    torch.testing.assert_close(cf.scale, torch.full((B,), 20.0, dtype=torch.float64))
    cf = closed_form(build_loss("arccon"), z1, z2)
    theta = torch.arccos(s.diagonal())
    torch.testing.assert_close(cf.r, torch.sin(theta + torch.pi / 18) / torch.sin(theta))
    assert (cf.r > 1).all() == bool((theta + torch.pi / 18 < torch.pi / 2).all())


@pytest.mark.parametrize("name", BUILTIN + sorted(preset_names()))
def test_effective_decomposition_rebuilds_the_gradient(name: str) -> None:
    loss = build_loss(name)
    z1, z2, _ = _views(3, False)
    z = z1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(z, z2).total, z)
    ef = effective_decomposition(loss, z1, z2)
    rebuilt = paradigm_gradient(ef, z1, z2)
    if name in ("barlowtwins", "barlowtwins-ori-bert", "barlowtwins-ori-roberta"):
        # the ori positive weights each dimension: not a function of the cosines, reported as "other"
        assert ef.other_share.mean() > 0.01
        return
    assert ef.other_share.max() < 1e-9
    torch.testing.assert_close(rebuilt, g, atol=1e-9, rtol=1e-7)


class _NoCosine(nn.Module):
    def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
        return LossOutput(((z1 - z2) ** 2).sum())


def test_loss_without_similarities() -> None:
    z1, z2, _ = _views(4, False)
    ef = effective_decomposition(_NoCosine(), z1, z2)
    assert ef.note and torch.isnan(ef.gd).all() and (ef.other_share > 0.99).all()
    stats = step_stats(_NoCosine(), z1, z2)
    assert stats["paradigm/pos_angle_deg"] > 0


def test_step_stats_is_cheap_and_detached() -> None:
    z1, z2, hn = _views(5, True)
    w = z1.clone().requires_grad_(True)
    y1, y2 = w * 2, z2.clone()
    loss = build_loss("infonce", temperature=0.1)
    out = loss(y1, y2, hn)
    stats = step_stats(loss, y1, y2, hn)
    out.total.backward()  # the training graph is intact and unchanged
    w2 = z1.clone().requires_grad_(True)
    loss(w2 * 2, y2, hn).total.backward()
    assert w.grad is not None and w2.grad is not None
    torch.testing.assert_close(w.grad, w2.grad, atol=0, rtol=0)
    keys = {
        "gd_mean",
        "active_share",
        "w_hardest",
        "r_mean",
        "same_view_share",
        "other_share",
        "pos_angle_deg",
        "neg_angle_deg",
        "hardest_neg_angle_deg",
    }
    assert set(stats) == {f"paradigm/{k}" for k in keys}
    assert 0 <= stats["paradigm/gd_mean"] <= 1 and 0 <= stats["paradigm/active_share"] <= 1
    assert 0 < stats["paradigm/w_hardest"] <= 1 and stats["paradigm/r_mean"] == pytest.approx(1.0)
    assert stats["paradigm/hardest_neg_angle_deg"] <= stats["paradigm/neg_angle_deg"]
    with torch.no_grad():
        again = step_stats(loss, y1.bfloat16(), y2.bfloat16(), hn.bfloat16())  # type: ignore[union-attr]
    assert again["paradigm/gd_mean"] == pytest.approx(stats["paradigm/gd_mean"], abs=0.05)
    # hardest-negative share grows as tau shrinks
    shares = [step_stats(build_loss("infonce", temperature=t), z1, z2)["paradigm/w_hardest"] for t in (1, 0.1, 0.01)]
    assert shares == sorted(shares)


def test_closed_form_dispatches_on_the_declaration() -> None:
    """closed_form and gd_scale call the loss's own methods, so any module declaring them works."""
    from csrl.losses import loss_names, loss_traits
    from csrl.losses._functional import ClosedForm
    from csrl.losses.paradigm import gd_scale

    class Declared(nn.Module):
        def paradigm_closed_form(self, s: Tensor) -> ClosedForm:
            n, m = s.shape
            return ClosedForm(torch.full((n,), 0.5, dtype=s.dtype), torch.full_like(s, 1 / m), torch.ones(n))

        def gd_scale(self, cos: Tensor) -> Tensor:
            return cos.new_full((cos.shape[0],), 3.0)

    z1, z2, _ = _views(6, False)
    cf = closed_form(Declared(), z1, z2)
    assert (cf.gd == 0.5).all() and (cf.scale == 3.0).all() and (cf.gd_raw == 1.5).all()
    assert (gd_scale(_NoCosine(), cf.cos) == 1).all()
    with pytest.raises(TypeError, match="no closed form for _NoCosine; use effective_decomposition"):
        closed_form(_NoCosine(), z1, z2)
    for name in loss_names():  # the trait and the dispatch agree for every registered loss
        if loss_traits(name).has_closed_form:
            assert closed_form(build_loss(name), z1, z2).gd.shape == (B,)
        else:
            with pytest.raises(TypeError, match="no closed form"):
                closed_form(build_loss(name), z1, z2)
