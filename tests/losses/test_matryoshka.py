"""Matryoshka wrapper: value and gradient against the formula, traits, errors, and what GD/W/R mean for it."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss, loss_traits
from csrl.losses.matryoshka import MatryoshkaLoss, halvings
from csrl.losses.paradigm import effective_decomposition, paradigm_gradient, step_stats
from csrl.train.config import load_config


def views(b: int = 6, d: int = 12, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(3))  # type: ignore[return-value]


def infonce_by_hand(a: Tensor, b: Tensor, hn: Tensor | None, tau: float) -> Tensor:
    """-log( e^{cos(a_i, b_i)/tau} / sum_j e^{cos(a_i, c_j)/tau} ), mean over i; c = rows of b then hn."""
    cands = b if hn is None else torch.cat([b, hn])
    cos = (a / a.norm(dim=1, keepdim=True)) @ (cands / cands.norm(dim=1, keepdim=True)).T
    logits = cos / tau
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


@pytest.mark.parametrize("with_hn", [False, True])
def test_value_and_gradient_equal_the_formula(with_hn: bool) -> None:
    z1, z2, hn = views()
    dims, weights, tau = (3, 6, 12), (0.5, 1.0, 2.0), 0.1
    hard = hn if with_hn else None
    loss = build_loss("matryoshka", inner_params={"temperature": tau}, dims=dims, weights=weights)
    a = z1.clone().requires_grad_(True)
    out = loss(a, z2, hard)
    (g,) = torch.autograd.grad(out.total, a)
    b = z1.clone().requires_grad_(True)
    parts = [infonce_by_hand(b[:, :m], z2[:, :m], None if hard is None else hard[:, :m], tau) for m in dims]
    ref = sum(c * p for c, p in zip(weights, parts, strict=True))
    assert isinstance(ref, Tensor)
    (g_ref,) = torch.autograd.grad(ref, b)
    torch.testing.assert_close(out.total, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)
    assert list(out.terms) == ["dim3", "dim6", "dim12", "infonce"]
    for m, p in zip(dims, parts, strict=True):
        torch.testing.assert_close(out.terms[f"dim{m}"], p.detach())  # unweighted per-prefix values
    assert not any(t.requires_grad for t in out.terms.values())
    # the prefixes matter: the gradient is not the full-dim InfoNCE's times the weight sum
    full = build_loss("infonce", temperature=tau)(z1.clone().requires_grad_(True), z2, hard).total
    assert abs(float(out.total.detach()) - 3.5 * float(full.detach())) > 1e-3


def test_one_dim_is_the_inner_loss_and_defaults_are_the_papers_halvings() -> None:
    z1, z2, _ = views(d=12)
    assert float(build_loss("matryoshka", dims=(12,))(z1, z2).total) == pytest.approx(
        float(build_loss("infonce")(z1, z2).total), rel=1e-12
    )
    assert halvings(768) == (12, 24, 48, 96, 192, 384, 768) and halvings(2048)[0] == 8 and halvings(7) == (7,)
    assert halvings(100) == (25, 50, 100)
    z1, z2, _ = views(d=32)
    out = build_loss("matryoshka")(z1, z2)  # dims=None: 8, 16, 32, each weight 1
    assert [k for k in out.terms if k.startswith("dim")] == ["dim8", "dim16", "dim32"]
    ref = sum(float(build_loss("infonce")(z1[:, :m], z2[:, :m]).total) for m in (8, 16, 32))
    assert float(out.total) == pytest.approx(ref, rel=1e-12)


def test_inner_loss_and_its_terms_and_traits() -> None:
    z1, z2, hn = views(d=8)
    loss = build_loss("matryoshka", inner="mhe", inner_params={"variant": "mod"}, dims=(4, 8))
    assert isinstance(loss, MatryoshkaLoss) and not loss.inner_traits.hard_negatives
    out = loss(z1, z2)
    inner8 = build_loss("mhe", variant="mod")(z1, z2)
    assert set(inner8.terms) <= set(out.terms)  # the inner's terms at the largest prefix
    for k, v in inner8.terms.items():
        torch.testing.assert_close(out.terms[k], v)
    with pytest.raises(ValueError, match="hard negatives are not supported"):
        loss(z1, z2, hn)  # the inner loss's refusal, at the first forward
    traits = loss_traits("matryoshka")
    assert traits.in_batch_negatives and traits.hard_negatives and not traits.has_closed_form
    assert loss_traits("matryoshka").paper_defaults == {"dims": None, "weights": None}


@pytest.mark.parametrize(
    "params,message",
    [
        ({"dims": (64, 32)}, "strictly increasing"),
        ({"dims": (8, 8)}, "strictly increasing"),
        ({"dims": (0, 8)}, "positive integers"),
        ({"dims": ()}, "non-empty"),
        ({"dims": (4, 8), "weights": (1.0,)}, "one value per dim"),
        ({"dims": (4, 8), "weights": (1.0, -1.0)}, "> 0"),
        ({"dims": (4, 8), "weights": (1.0, float("nan"))}, "> 0"),
        ({"weights": (1.0,)}, "need explicit dims"),
        ({"inner": "matryoshka"}, "another loss"),
        ({"inner": "nope"}, "unknown loss 'nope'"),
        ({"inner_params": {"tau": 0.1}}, "no parameter"),
        ({"inner_params": {"temperature": -1.0}}, "temperature"),
    ],
)
def test_bad_parameters_are_user_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(CsrlError, match=message):
        build_loss("matryoshka", **params)


def test_dims_beyond_the_embedding_are_refused_at_the_first_forward() -> None:
    z1, z2, _ = views(d=12)
    loss = build_loss("matryoshka", dims=(4, 16))
    with pytest.raises(CsrlError, match="beyond the 12-dimensional embedding") as err:
        loss(z1, z2)
    assert err.value.hint is not None and "loss.dims" in err.value.hint


def test_config_round_trip_through_the_schema() -> None:
    cfg = load_config(
        None,
        ["loss.name=matryoshka", "loss.inner=arccon", "loss.inner_params={temperature: 0.1}", "loss.dims=[4, 8]"],
    )
    assert dict(cfg.loss.params) == {"inner": "arccon", "inner_params": {"temperature": 0.1}, "dims": (4, 8)}
    with pytest.raises(CsrlError, match="expected an integer"):
        load_config(None, ["loss.name=matryoshka", "loss.dims=[4, x]"])


# ----------------------------------------------------------------------------- gradient paradigm
def test_decomposition_is_the_weighted_mixture_of_the_per_prefix_ones() -> None:
    z1, z2, hn = views(b=7, d=12, seed=3)
    dims, weights = (3, 6, 12), (0.5, 1.0, 2.0)
    loss = build_loss("matryoshka", inner_params={"temperature": 0.2}, dims=dims, weights=weights)
    assert isinstance(loss, MatryoshkaLoss)
    dec = effective_decomposition(loss, z1, z2, hn)
    per = loss.per_dim_decompositions(z1, z2, hn)
    # independently: each prefix's decomposition is that of a plain InfoNCE on the truncated views
    plain = {
        m: effective_decomposition(build_loss("infonce", temperature=0.2), z1[:, :m], z2[:, :m], hn[:, :m])
        for m in dims
    }
    for m in dims:
        torch.testing.assert_close(per[m].gd, plain[m].gd)
    strength = torch.stack([c * per[m].gd_raw for m, c in zip(dims, weights, strict=True)])  # (|M|, B)
    torch.testing.assert_close(dec.gd_raw, strength.sum(0))
    mean_gd = sum(c * per[m].gd for m, c in zip(dims, weights, strict=True)) / sum(weights)
    torch.testing.assert_close(dec.gd, mean_gd)  # infonce's c = 1/tau at every prefix: exact weighted mean
    assert bool(((dec.gd >= 0) & (dec.gd <= 1)).all())
    share = strength / strength.sum(0)
    w_mix = sum(share[k][:, None] * per[m].w_cross for k, m in enumerate(dims))
    r_mix = sum(share[k] * per[m].r for k, m in enumerate(dims))
    torch.testing.assert_close(dec.w_cross, w_mix)
    torch.testing.assert_close(dec.r, r_mix)
    torch.testing.assert_close(dec.w_cross.sum(1), torch.ones(7, dtype=torch.float64))
    assert float(dec.other_share.max()) < 1e-10  # every bit of gradient passes through recorded cosines

    # the exact reading: per-prefix paradigm gradients, weighted and zero-padded, add up to dL/dz1 ...
    a = z1.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(a, z2, hn).total, a)
    rebuilt = torch.zeros_like(z1)
    for m, c in zip(dims, weights, strict=True):
        rebuilt[:, :m] += c * paradigm_gradient(per[m], z1[:, :m], z2[:, :m], hn[:, :m])
    torch.testing.assert_close(rebuilt, grad, rtol=1e-9, atol=1e-12)
    # ... which the aggregate, read along full-dim directions, cannot do
    assert not torch.allclose(paradigm_gradient(dec, z1, z2, hn), grad, atol=1e-3)


def test_step_stats_run_with_default_dims() -> None:
    z1, z2, _ = views(b=5, d=16)
    stats = step_stats(build_loss("matryoshka"), z1.float(), z2.float())
    assert 0 <= stats["paradigm/gd_mean"] <= 1 and stats["paradigm/other_share"] < 1e-5
