"""AnglE: value and gradient against loops over pairs written from the formula, with the angle similarity computed
by complex-number division (torch.complex) as the authors describe it; its properties, relations and traits."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss, loss_traits
from csrl.losses.angle import AnglE, angle_loss, angle_similarity, angle_similarity_matrix
from csrl.losses.cosent import cosent_in_batch, cosent_scored
from csrl.losses.infonce import info_nce
from csrl.losses.paradigm import closed_form

F64 = torch.float64


def _rows(seed: int, n: int, dim: int, noise: float = 0.9) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, dim, generator=g, dtype=F64)
    z2 = z1 + noise * torch.randn(n, dim, generator=g, dtype=F64)
    hn = z1 + 1.5 * noise * torch.randn(n, dim, generator=g, dtype=F64)
    return z1, z2, hn


# ----------------------------------------------------------------------------- the reference, from the formula
def ref_angle(u: Tensor, v: Tensor) -> Tensor:
    """|sum Re q + sum Im q|: z, w complex (real half, imaginary half; odd dim: a zero imaginary part appended);
    q_k = (z_k / w_k) |w_k|^2 / (||z|| ||w||), the coordinate-wise complex quotient normalised by the moduli."""
    if u.shape[0] % 2:
        u, v = torch.cat([u, u.new_zeros(1)]), torch.cat([v, v.new_zeros(1)])
    h = u.shape[0] // 2
    z, w = torch.complex(u[:h], u[h:]), torch.complex(v[:h], v[h:])
    mod_z, mod_w = torch.sqrt((z.abs() ** 2).sum()), torch.sqrt((w.abs() ** 2).sum())
    q = (z / w) * w.abs() ** 2 / (mod_z * mod_w)
    return torch.abs(q.real.sum() + q.imag.sum())


def ref_cos(u: Tensor, v: Tensor) -> Tensor:
    return (u * v).sum() / (u.norm() * v.norm())


def ref_rank(values: list[Tensor], gold: list[float], lam: float) -> Tensor:
    """log(1 + sum over (a, b) with gold_a > gold_b of exp(lam (value_b - value_a))), one pair of pairs at a time."""
    total = torch.ones((), dtype=F64)
    for a in range(len(values)):
        for b in range(len(values)):
            if gold[a] > gold[b]:
                total = total + torch.exp(lam * (values[b] - values[a]))
    return torch.log(total)


def ref_infonce(anchors: list[Tensor], cands: list[Tensor], targets: list[int], lam: float) -> Tensor:
    """mean over the anchors of -log(e^{lam cos(a, c_t)} / sum_j e^{lam cos(a, c_j)}); 0 without anchors."""
    terms = []
    for a, t in zip(anchors, targets, strict=True):
        logits = [lam * ref_cos(a, c) for c in cands]
        terms.append(-(logits[t] - torch.log(sum(torch.exp(x) for x in logits))))  # type: ignore[arg-type]
    return torch.stack(terms).mean() if terms else torch.zeros((), dtype=F64)


def ref_scored(
    z1: Tensor, z2: Tensor, gold: list[float], w: tuple[float, ...], s: tuple[float, ...], pos: float
) -> Tensor:
    n = z1.shape[0]
    l_cos = ref_rank([ref_cos(z1[i], z2[i]) for i in range(n)], gold, s[0])
    l_ang = ref_rank([ref_angle(z1[i], z2[i]) for i in range(n)], gold, s[2])
    positives = [i for i in range(n) if gold[i] >= pos]
    l_ibn = ref_infonce([z1[p] for p in positives], list(z2), positives, s[1])
    return w[0] * l_cos + w[1] * l_ibn + w[2] * l_ang


def ref_in_batch(z1: Tensor, z2: Tensor, hn: Tensor | None, w: tuple[float, ...], s: tuple[float, ...]) -> Tensor:
    cands = list(z2) + ([] if hn is None else list(hn))
    cos, ang, gold = [], [], []
    for i in range(z1.shape[0]):
        for j, c in enumerate(cands):
            cos.append(ref_cos(z1[i], c))
            ang.append(ref_angle(z1[i], c))
            gold.append(1.0 if j == i else 0.0)
    l_ibn = ref_infonce(list(z1), cands, list(range(z1.shape[0])), s[1])
    return w[0] * ref_rank(cos, gold, s[0]) + w[1] * l_ibn + w[2] * ref_rank(ang, gold, s[2])


def _check_value_and_grads(got: Tensor, ref: Tensor, ins: list[Tensor], ref_ins: list[Tensor]) -> None:
    torch.testing.assert_close(got, ref, rtol=1e-11, atol=1e-11)
    for g, r in zip(torch.autograd.grad(got, ins), torch.autograd.grad(ref, ref_ins), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)


# ----------------------------------------------------------------------------- value and gradient
@pytest.mark.parametrize("dim", [8, 7])
@pytest.mark.parametrize(
    "weights,scales,pos",
    [((1.0, 1.0, 1.0), (20.0, 20.0, 20.0), 1.0), ((0.3, 2.0, 0.7), (5.0, 11.0, 3.0), 3.0)],
)
def test_scored_pairs_match_the_loops(
    dim: int, weights: tuple[float, ...], scales: tuple[float, ...], pos: float
) -> None:
    z1, z2, _ = _rows(0, 6, dim)
    gold = [4.6, 0.4, 3.0, 3.0, 1.2, 5.0]  # a tie, pairs on both sides of the positive thresholds
    ins = [z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)]
    loss = AnglE(*weights, *scales, positive_score=pos)  # type: ignore[arg-type]
    out = loss(ins[0], ins[1], scores=torch.tensor(gold, dtype=F64))
    ref_ins = [t.clone().requires_grad_(True) for t in (z1, z2)]
    _check_value_and_grads(out.total, ref_scored(*ref_ins, gold, weights, scales, pos), ins, ref_ins)
    assert set(out.terms) == {"cosine", "ibn", "angle"}
    # each term alone is its loop
    torch.testing.assert_close(out.terms["angle"], ref_scored(z1, z2, gold, (0, 0, 1), scales, pos))
    torch.testing.assert_close(out.terms["ibn"], ref_scored(z1, z2, gold, (0, 1, 0), scales, pos))


@pytest.mark.parametrize("hard", [False, True])
def test_in_batch_pairs_match_the_loops(hard: bool) -> None:
    z1, z2, hn = _rows(1, 4, 6)
    weights, scales = (0.5, 1.5, 2.0), (20.0, 7.0, 13.0)
    views = [z1, z2] + ([hn] if hard else [])
    ins = [t.clone().requires_grad_(True) for t in views]
    out = angle_loss(ins[0], ins[1], ins[2] if hard else None, weights=weights, scales=scales)
    ref_ins = [t.clone().requires_grad_(True) for t in views]
    ref = ref_in_batch(ref_ins[0], ref_ins[1], ref_ins[2] if hard else None, weights, scales)
    _check_value_and_grads(out.total, ref, ins, ref_ins)


def test_no_positive_in_the_batch_gives_a_zero_ibn_term_with_a_graph() -> None:
    z1, z2, _ = _rows(2, 4, 6)
    z = z1.clone().requires_grad_(True)
    out = build_loss("angle", positive_score=4.0)(z, z2, scores=torch.tensor([1.0, 2.0, 0.5, 3.9], dtype=F64))
    assert out.terms["ibn"].item() == 0.0 and out.terms["cosine"] > 0 and out.terms["angle"] > 0
    out.total.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


# ----------------------------------------------------------------------------- the angle similarity
def test_angle_similarity_properties() -> None:
    g = torch.Generator().manual_seed(3)
    u, v = torch.randn(5, 10, generator=g, dtype=F64), torch.randn(5, 10, generator=g, dtype=F64)
    a = angle_similarity(u, v)
    torch.testing.assert_close(a, torch.stack([ref_angle(x, y) for x, y in zip(u, v, strict=True)]))
    torch.testing.assert_close(angle_similarity_matrix(u, v).diagonal(), a)
    torch.testing.assert_close(angle_similarity_matrix(u, v)[1, 3], ref_angle(u[1], v[3]))
    torch.testing.assert_close(angle_similarity(u, u), torch.ones(5, dtype=F64))  # h = 1
    torch.testing.assert_close(angle_similarity(3 * u, 0.2 * v), a)  # magnitudes do not matter
    assert (a <= math.sqrt(2) + 1e-12).all() and (a >= 0).all()
    # rotating every complex coordinate of z by phi: h = e^{-i phi}, A = |cos phi - sin phi| (module doc)
    for phi in (0.0, 0.3, math.pi / 4, 1.9, -2.5):
        re, im = u[:, :5], u[:, 5:]
        rot = torch.cat([re * math.cos(phi) - im * math.sin(phi), re * math.sin(phi) + im * math.cos(phi)], dim=1)
        want = abs(math.cos(phi) - math.sin(phi))
        torch.testing.assert_close(angle_similarity(u, rot), torch.full((5,), want, dtype=F64))
    # the real part alone is the cosine: A != |cos| in general
    cos = torch.nn.functional.cosine_similarity(u, v)
    assert not torch.allclose(a, cos.abs())


# ----------------------------------------------------------------------------- relations
def test_relations_to_cosent_and_infonce() -> None:
    z1, z2, hn = _rows(4, 5, 8)
    gold = torch.tensor([3.0, 1.0, 4.5, 0.0, 2.2], dtype=F64)
    only_cos = AnglE(1.0, 0.0, 0.0)
    torch.testing.assert_close(only_cos(z1, z2, scores=gold).total, cosent_scored(z1, z2, gold).total)
    torch.testing.assert_close(only_cos(z1, z2, hn).total, cosent_in_batch(z1, z2, hn).total)
    only_ibn = AnglE(0.0, 1.0, 0.0)
    torch.testing.assert_close(only_ibn(z1, z2, hn).total, info_nce(z1, z2, hn, temperature=0.05).total)
    torch.testing.assert_close(only_ibn(z1, z2, scores=torch.ones(5, dtype=F64)).total, info_nce(z1, z2).total)
    # only the order of the scores matters to the ranking terms
    ranking = AnglE(1.0, 0.0, 1.0)
    torch.testing.assert_close(ranking(z1, z2, scores=gold * 7 - 3).total, ranking(z1, z2, scores=gold).total)


# ----------------------------------------------------------------------------- traits and errors
def test_traits_defaults_and_errors() -> None:
    traits = loss_traits("angle")
    assert traits.scored_pairs and traits.hard_negatives and traits.in_batch_negatives
    assert not traits.paradigm_applies and not traits.has_closed_form
    assert dict(traits.paper_defaults) == {
        "cosine_weight": 1.0, "ibn_weight": 1.0, "angle_weight": 1.0,
        "cosine_scale": 20.0, "ibn_scale": 20.0, "angle_scale": 20.0,
    }  # fmt: skip
    assert loss_traits("cosent").scored_pairs and loss_traits("cosent").paradigm_applies
    assert not loss_traits("infonce").scored_pairs
    loss = build_loss("angle")
    assert isinstance(loss, AnglE) and loss.weights == (1.0, 1.0, 1.0) and loss.positive_score == 1.0
    for bad in ({"ibn_weight": -1.0}, {"cosine_weight": 0.0, "ibn_weight": 0.0, "angle_weight": 0.0},
                {"angle_scale": 0.0}, {"positive_score": float("nan")}):  # fmt: skip
        with pytest.raises(CsrlError, match="weight|scale|positive_score"):
            build_loss("angle", **bad)
    z1, z2, hn = _rows(5, 4, 6)
    with pytest.raises(ValueError, match="cannot be combined"):
        loss(z1, z2, hn, scores=torch.ones(4))
    with pytest.raises(ValueError, match=r"scores must be \(batch,\)"):
        loss(z1, z2, scores=torch.ones(3))
    with pytest.raises(ValueError, match="batch size"):
        loss(z1[:1], z2[:1])
    with pytest.raises(TypeError, match="no closed form"):
        closed_form(loss, z1, z2)
