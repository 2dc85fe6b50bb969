"""CoSENT: value and gradient against explicit double loops written from the formula, traits, paradigm."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss, loss_traits
from csrl.losses.cosent import CoSENT, cosent, cosent_in_batch
from csrl.losses.paradigm import closed_form, effective_decomposition, paradigm_gradient


def _views(seed: int, batch: int = 4, dim: int = 5, hard: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(batch, dim, generator=g, dtype=torch.float64)
    z2 = z1 + 0.8 * torch.randn(batch, dim, generator=g, dtype=torch.float64)
    hn = z1 + 1.2 * torch.randn(batch, dim, generator=g, dtype=torch.float64) if hard else None
    return z1, z2, hn


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum() / (a.norm() * b.norm())


def reference_scored(cos: list[Tensor], gold: list[float], lam: float) -> Tensor:
    """log(1 + sum over (a, b) with gold_a > gold_b of exp(lam (cos_b - cos_a))), one pair of pairs at a time."""
    total = torch.ones((), dtype=torch.float64)
    for a in range(len(cos)):
        for b in range(len(cos)):
            if gold[a] > gold[b]:
                total = total + torch.exp(lam * (cos[b] - cos[a]))
    return torch.log(total)


def reference_in_batch(z1: Tensor, z2: Tensor, hn: Tensor | None, lam: float) -> Tensor:
    """The in-batch convention spelled out: pairs (anchor i, candidate j), gold 1 iff j is i's positive."""
    cands = list(z2) + ([] if hn is None else list(hn))
    cos, gold = [], []
    for i in range(z1.shape[0]):
        for j, c in enumerate(cands):
            cos.append(_cos(z1[i], c))
            gold.append(1.0 if j == i else 0.0)
    return reference_scored(cos, gold, lam)


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("scale", [20.0, 3.0])
def test_in_batch_value_and_gradient_match_the_double_loop(hard: bool, scale: float) -> None:
    z1, z2, hn = _views(0, hard=hard)
    views = [t.clone().requires_grad_(True) for t in (z1, z2, *([hn] if hn is not None else []))]
    out = cosent_in_batch(views[0], views[1], views[2] if hard else None, scale=scale)
    ref_views = [t.clone().requires_grad_(True) for t in views]
    ref = reference_in_batch(ref_views[0], ref_views[1], ref_views[2] if hard else None, scale)
    torch.testing.assert_close(out.total, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out.total, views)
    ref_grads = torch.autograd.grad(ref, ref_views)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    assert set(out.terms) == {"cosent"}


def test_scored_pairs_match_the_double_loop_with_ties() -> None:
    g = torch.Generator().manual_seed(1)
    pred = (torch.rand(7, generator=g, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    gold = torch.tensor([5.0, 3.2, 3.2, 0.0, 4.8, 1.0, 3.2], dtype=torch.float64)
    got = cosent(pred, gold, 20.0)
    ref_pred = pred.detach().clone().requires_grad_(True)
    ref = reference_scored(list(ref_pred), gold.tolist(), 20.0)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got, pred)[0], torch.autograd.grad(ref, ref_pred)[0])
    # only the order of the gold scores matters
    torch.testing.assert_close(cosent(pred, gold * 3 - 7), got)
    # all ties: no pair of pairs, L = log 1 = 0
    assert cosent(pred, torch.ones_like(gold)).item() == 0.0
    with pytest.raises(ValueError, match=r"\(n,\)"):
        cosent(pred[:, None], gold[:, None])


def test_in_batch_is_the_scored_loss_with_binary_gold() -> None:
    z1, z2, hn = _views(2, batch=5, hard=True)
    assert hn is not None
    cands = torch.cat([z2, hn])
    s = torch.nn.functional.normalize(z1, dim=-1) @ torch.nn.functional.normalize(cands, dim=-1).T
    gold = torch.eye(5, 10, dtype=torch.float64)
    torch.testing.assert_close(cosent_in_batch(z1, z2, hn).total, cosent(s.flatten(), gold.flatten(), 20.0))


def test_invariances_and_limits() -> None:
    z1, z2, hn = _views(3, batch=6, hard=True)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    loss = build_loss("cosent")
    base = loss(z1, z2, hn).total
    # relabelling the batch (same permutation for every view) leaves the loss unchanged; so does scaling rows
    torch.testing.assert_close(loss(z1[perm], z2[perm], hn[perm]).total, base)  # type: ignore[index]
    torch.testing.assert_close(loss(3 * z1, 0.5 * z2, 2 * hn).total, base)  # type: ignore[operator]
    # identical positives, orthogonal negatives: each of the B M - B negative pairs meets each of the B
    # positives, L = log(1 + (B M - B) B e^{-scale}) (InfoNCE's per-anchor log would have B - 1 terms)
    eye = torch.eye(4, dtype=torch.float64)
    want = math.log1p((4 * 4 - 4) * 4 * math.exp(-20.0))
    assert loss(eye, eye).total.item() == pytest.approx(want, rel=1e-12)


def test_traits_and_registry() -> None:
    traits = loss_traits("cosent")
    assert traits.name == "cosent" and traits.in_batch_negatives and traits.hard_negatives
    assert not traits.has_closed_form and dict(traits.paper_defaults) == {"scale": 20.0}
    assert build_loss("cosent", **traits.paper_defaults).scale == 20.0  # type: ignore[union-attr]
    assert isinstance(build_loss("cosent"), CoSENT)
    with pytest.raises(CsrlError, match="scale"):
        build_loss("cosent", scale=0.0)
    z1, z2, _ = _views(4)
    with pytest.raises(ValueError, match="batch size"):
        build_loss("cosent")(z1[:1], z2[:1])
    with pytest.raises(ValueError, match="hard_neg"):
        build_loss("cosent")(z1, z2, z1[:, :2])


@pytest.mark.parametrize("hard", [False, True])
def test_no_closed_form_but_the_effective_decomposition_runs(hard: bool) -> None:
    loss = build_loss("cosent")
    z1, z2, hn = _views(5, batch=6, hard=hard)
    with pytest.raises(TypeError, match="no closed form for CoSENT"):
        closed_form(loss, z1, z2, hn)
    z = z1.clone().requires_grad_(True)
    total = loss(z, z2, hn).total
    (g,) = torch.autograd.grad(total, z)
    ef = effective_decomposition(loss, z1, z2, hn)
    assert ef.other_share.max() < 1e-9 and ef.w_same.abs().max() == 0
    torch.testing.assert_close(paradigm_gradient(ef, z1, z2, hn), g, atol=1e-9, rtol=1e-7)
    # one softmax over the whole batch: with c = scale, the mean GD is 1 - e^{-L}
    torch.testing.assert_close(ef.gd.mean(), 1 - torch.exp(-total.detach()))
    torch.testing.assert_close(ef.w_cross.sum(1), torch.ones(6, dtype=torch.float64))
    assert (ef.w_cross >= 0).all() and (ef.r > 0).all()


def test_scored_pairs_forward_matches_the_double_loop() -> None:
    """With ``scores`` (a scored-pair corpus) the registered loss ranks the B pairs (z1_i, z2_i) by their gold scores."""
    z1, z2, _ = _views(6, batch=6)
    gold = torch.tensor([4.2, 0.5, 3.1, 3.1, 5.0, 1.7], dtype=torch.float64)
    ins = [z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)]
    got = build_loss("cosent", scale=7.0)(*ins, scores=gold)
    ref_ins = [t.clone().requires_grad_(True) for t in (z1, z2)]
    ref = reference_scored([_cos(ref_ins[0][i], ref_ins[1][i]) for i in range(6)], gold.tolist(), 7.0)
    torch.testing.assert_close(got.total, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(torch.autograd.grad(got.total, ins), torch.autograd.grad(ref, ref_ins), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
    assert set(got.terms) == {"cosent"} and loss_traits("cosent").scored_pairs
    with pytest.raises(ValueError, match="cannot be combined"):
        build_loss("cosent")(z1, z2, z1, scores=gold)
    with pytest.raises(ValueError, match=r"scores must be \(batch,\)"):
        build_loss("cosent")(z1, z2, scores=gold[:3])
