"""MHE, MHS, Barlow Twins, VICReg (papers.md 1.6), ori and mod: formula re-implementations and switches."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss
from csrl.losses.paradigm import effective_decomposition

B, D = 6, 5
SWITCH_SETS = ["ori", "w_gd", "w_w", "w_r", "w_w.w_r", "mod"]


def _views(seed: int, noise: float = 0.5) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(B, D, generator=g, dtype=torch.float64)
    return z1, z1 + noise * torch.randn(B, D, generator=g, dtype=torch.float64)


def _switches(variant: str, allowed: tuple[str, ...] = ("w_gd", "w_w", "w_r")) -> set[str]:
    return set() if variant == "ori" else set(allowed) if variant == "mod" else set(variant.split("."))


def _unit_rows(z: Tensor, sw: set[str], m: float) -> list[Tensor]:
    """Normalised rows; with w_gd a row is detached unless 1 - max_{k != i} cos(h_i, h_k) < m."""
    h = [z[i] / z[i].norm() for i in range(B)]
    if "w_gd" not in sw:
        return h
    near = [max(float(h[i].detach().dot(h[k].detach())) for k in range(B) if k != i) for i in range(B)]
    return [h[i] if 1 - near[i] < m else h[i].detach() for i in range(B)]


def ref_mhe(z1: Tensor, z2: Tensor, variant: str, lam: float, m: float, tau: float, r: float) -> Tensor:
    sw = _switches(variant)
    u, v = _unit_rows(z1, sw, m), _unit_rows(z2, sw, m)
    t = tau if "w_w" in sw else 1.0
    total = z1.new_zeros(())
    weights = [0.0] * B
    for x in (u, v):
        pairs = [torch.exp(x[k].dot(x[q]) / t) for k in range(B) for q in range(k)]
        z = sum(pairs)
        total = total + lam * torch.log(z)
        for i in range(B):
            if "w_w" in sw:
                mine = sum(float(torch.exp(x[i].dot(x[k]).detach() / t)) for k in range(B) if k != i)
                weights[i] += mine / (t * float(z.detach())) / 2
            else:
                weights[i] += 1 / B / 2
    rr = r if "w_r" in sw else 1.0
    for i in range(B):
        total = total + (2 - 2 * u[i].dot(v[i])) * weights[i] * rr
    return total


def ref_mhs(z1: Tensor, z2: Tensor, variant: str, lam: float, m: float, r: float) -> Tensor:
    sw = _switches(variant, ("w_gd", "w_r"))
    u, v = _unit_rows(z1, sw, m), _unit_rows(z2, sw, m)
    total = z1.new_zeros(())
    weights = [0.0] * B
    for a, b in ((u, v), (v, u)):
        for i in range(B):
            dist = [torch.sqrt(((a[i] - b[j].detach()) ** 2).sum() + 1e-4) for j in range(B) if j != i]
            nearest = min(dist, key=lambda x: float(x.detach()))
            total = total - lam * nearest / B
            weights[i] += (1 / float(nearest.detach()) if "w_r" in sw else 1.0) / 2
    rr = r if "w_r" in sw else 1.0
    for i in range(B):
        total = total + (2 - 2 * u[i].dot(v[i])) * weights[i] * rr / B
    return total


def _sample_weights(x: list[Tensor], sw: set[str], tau: float) -> list[list[float]]:
    s = [[float(x[i].detach().dot(x[k].detach())) for k in range(B)] for i in range(B)]
    if "w_w" not in sw:
        return [[s[i][k] / B * 2 / B for k in range(B)] for i in range(B)]
    e = [[math.exp(s[i][k] / tau) for k in range(B)] for i in range(B)]
    off = sum(e[i][k] for i in range(B) for k in range(B) if k != i)
    return [[e[i][k] / off for k in range(B)] for i in range(B)]


def ref_sample_wise(
    kind: str, z1: Tensor, z2: Tensor, variant: str, lam: float, m: float, tau: float, r: float
) -> tuple[Tensor, float]:
    """Paper B's sample-wise BT/VICReg, negative sum over all k (k = i included, as written in the paper).

    Returns the loss and the constant lam * sum_i w_ii of the k = i terms (csrl drops them: zero gradient)."""
    sw = _switches(variant)
    u, v = _unit_rows(z1, sw, m), _unit_rows(z2, sw, m)
    total, diag = z1.new_zeros(()), 0.0
    for a, b in ((u, v), (v, u)):
        w = _sample_weights(b if kind == "barlowtwins" else a, sw, tau)
        for i in range(B):
            total = total + lam * sum(w[i][k] * a[i].dot(a[k].detach()) for k in range(B))
            diag += lam * w[i][i]
            if "w_r" in sw:
                total = total - lam * r * sum(w[i][k] for k in range(B) if k != i) * a[i].dot(b[i])
            elif kind == "vicreg":
                total = total - 2 / B * a[i].dot(b[i].detach())
            else:
                for d in range(D):
                    c_dd = sum(float(a[k][d].detach() * b[k][d].detach()) for k in range(B)) / B
                    total = total - (1 - (1 - lam) * c_dd) * 2 / B * a[i][d] * b[i][d].detach()
    return total, diag


def _check(ours: Tensor, ref: Tensor, args: tuple[Tensor, Tensor], ref_args: tuple[Tensor, Tensor]) -> None:
    assert ours.item() == pytest.approx(ref.item(), abs=1e-6)
    for x, y in zip(torch.autograd.grad(ours, args), torch.autograd.grad(ref, ref_args), strict=True):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def _pairs(z1: Tensor, z2: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    return (z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)), (
        z1.clone().requires_grad_(True),
        z2.clone().requires_grad_(True),
    )


@pytest.mark.parametrize("variant", SWITCH_SETS)
def test_mhe_matches_formula(variant: str) -> None:
    z1, z2 = _views(0)
    params = dict(lam=0.7, gd_margin=0.8, temperature=0.2, ratio=1.6)
    (a, b), (ra, rb) = _pairs(z1, z2)
    out = build_loss("mhe", variant=variant, **params)(a, b)  # type: ignore[arg-type]
    ref = ref_mhe(ra, rb, variant, 0.7, 0.8, 0.2, 1.6)
    _check(out.total, ref, (a, b), (ra, rb))
    assert (out.terms["align"] + out.terms["uniform"]).item() == pytest.approx(out.total.item(), abs=1e-10)


@pytest.mark.parametrize("variant", ["ori", "w_gd", "w_r", "mod"])
def test_mhs_matches_formula(variant: str) -> None:
    z1, z2 = _views(1)
    (a, b), (ra, rb) = _pairs(z1, z2)
    out = build_loss("mhs", variant=variant, lam=0.6, gd_margin=0.8, ratio=1.4)(a, b)
    _check(out.total, ref_mhs(ra, rb, variant, 0.6, 0.8, 1.4), (a, b), (ra, rb))


@pytest.mark.parametrize("kind", ["barlowtwins", "vicreg"])
@pytest.mark.parametrize("variant", SWITCH_SETS)
def test_sample_wise_match_formula(kind: str, variant: str) -> None:
    z1, z2 = _views(0)  # at gd_margin 0.8 some anchors of view 0 are gated
    (a, b), (ra, rb) = _pairs(z1, z2)
    out = build_loss(kind, variant=variant, lam=0.8, gd_margin=0.8, temperature=0.2, ratio=1.3)(a, b)
    ref, diag = ref_sample_wise(kind, ra, rb, variant, 0.8, 0.8, 0.2, 1.3)
    _check(out.total + diag, ref, (a, b), (ra, rb))
    assert (out.terms["positive"] + out.terms["negative"]).item() == pytest.approx(out.total.item(), abs=1e-10)


@pytest.mark.parametrize("name", ["mhe", "mhs", "barlowtwins", "vicreg"])
def test_w_gd_detaches_anchors_outside_margin(name: str) -> None:
    z1, z2 = _views(3)
    h = torch.nn.functional.normalize(z1, dim=-1)
    near = (h @ h.T).masked_fill(torch.eye(B, dtype=torch.bool), -2).amax(1)
    m = float((1 - near).median())
    off = 1 - near >= m
    assert off.any() and (~off).any()
    a = z1.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(build_loss(name, variant="w_gd", gd_margin=m)(a, z2).total, a)
    assert (g[off] == 0).all() and (g[~off].norm(dim=1) > 0).all()
    (g_ori,) = torch.autograd.grad(build_loss(name, gd_margin=m)(a, z2).total, a)
    assert (g_ori.norm(dim=1) > 0).all()


@pytest.mark.parametrize("name", ["mhe", "vicreg", "barlowtwins"])
def test_w_w_gives_softmax_weights(name: str) -> None:
    z1, z2 = _views(4)
    tau = 0.1
    dec = effective_decomposition(build_loss(name, variant="w_w", temperature=tau), z1, z2)
    # weights over same-view negatives: softmax of the same view's cosines (other view's for Barlow Twins)
    src = torch.nn.functional.normalize(z2 if name == "barlowtwins" else z1, dim=-1)
    expected = torch.softmax((src @ src.T / tau).masked_fill(torch.eye(B, dtype=torch.bool), float("-inf")), dim=1)
    torch.testing.assert_close(dec.w_same, expected, atol=1e-9, rtol=0)
    assert dec.w_cross.abs().max() < 1e-12  # no cross-view negatives


def test_w_r_sets_the_pull_to_ratio_times_negative_weight() -> None:
    z1, z2 = _views(5)
    tau, ratio, lam = 0.2, 1.7, 0.5
    h1, h2 = (torch.nn.functional.normalize(z, dim=-1) for z in (z1, z2))
    eye = torch.eye(B, dtype=torch.bool)

    def total_weight(h: Tensor) -> Tensor:  # VICReg w_w: e^{s/tau} normalised over the whole off-diagonal
        e = torch.exp(h @ h.T / tau).masked_fill(eye, 0.0)
        return e.sum(1) / e.sum()

    # anchor i is pulled by both directions (no stop-gradient under w_r), pushed by its own view's negatives
    dec = effective_decomposition(
        build_loss("vicreg", variant="w_w.w_r", temperature=tau, ratio=ratio, lam=lam), z1, z2
    )
    w0, w1 = total_weight(h1), total_weight(h2)
    torch.testing.assert_close(dec.r, ratio * (w0 + w1) / w0, atol=1e-9, rtol=0)

    def mhe_weight(h: Tensor) -> Tensor:  # MHE w_w: anchor's share of the uniformity gradient / tau
        e = torch.exp(h @ h.T / tau).masked_fill(eye, 0.0)
        return e.sum(1) / (tau * e.sum() / 2)

    dec = effective_decomposition(build_loss("mhe", variant="w_w.w_r", temperature=tau, ratio=ratio, lam=lam), z1, z2)
    w0, w1 = mhe_weight(h1), mhe_weight(h2)
    torch.testing.assert_close(dec.r, ratio * (w0 + w1) / (lam * w0), atol=1e-9, rtol=0)
    # ori ignores the ratio
    for name in ("mhe", "mhs", "barlowtwins", "vicreg"):
        assert build_loss(name, ratio=3.0)(z1, z2).total.item() == build_loss(name)(z1, z2).total.item()


def test_variants_and_errors() -> None:
    z1, z2 = _views(6)
    for name in ("mhe", "barlowtwins", "vicreg"):
        assert build_loss(name, variant="mod")(z1, z2).total.item() == pytest.approx(
            build_loss(name, variant="w_gd.w_w.w_r")(z1, z2).total.item(), abs=1e-12
        )
    assert build_loss("mhs", variant="mod")(z1, z2).total.item() == pytest.approx(
        build_loss("mhs", variant="w_gd+w_r")(z1, z2).total.item(), abs=1e-12
    )
    for name, params in [
        ("mhs", {"variant": "w_w"}),
        ("mhe", {"variant": "modified"}),
        ("vicreg", {"lam": -1.0}),
        ("barlowtwins", {"weighting": "softmax"}),
        ("mhe", {"temperature": 0.0}),
        ("mhs", {"gd_margin": 0.0}),
    ]:
        with pytest.raises(CsrlError, match=name):
            build_loss(name, **params)
    for name in ("mhe", "mhs", "barlowtwins", "vicreg"):
        with pytest.raises(ValueError, match="batch size"):
            build_loss(name)(z1[:1], z2[:1])
        with pytest.raises(ValueError, match="hard negatives"):
            build_loss(name)(z1, z2, z2)
        # view symmetry: every objective here is symmetrised
        loss = build_loss(name, variant="mod")
        assert loss(z1, z2).total.item() == pytest.approx(loss(z2, z1).total.item(), abs=1e-10)


@pytest.mark.parametrize("t", [1.0, 0.05])
def test_mhe_terms_are_the_wang_isola_metrics(t: float) -> None:
    """ori MHE = lam (U_0 + U_1) + alignment, with U_v = uniformity(h_v, 1/(2t)) + 1/t + log(N (N - 1) / 2)."""
    from csrl.analysis.sentence_metrics import alignment, uniformity

    g = torch.Generator().manual_seed(11)
    z1 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(6, 5, generator=g, dtype=torch.float64)
    variant = "ori" if t == 1.0 else "w_w"  # w_w puts the uniformity on cosines / temperature
    out = build_loss("mhe", variant=variant, lam=2.0, temperature=t)(z1, z2)
    shift = 1 / t + math.log(6 * 5 / 2)
    want = 2.0 * sum(uniformity(z, t=1 / (2 * t)) + shift for z in (z1, z2))
    torch.testing.assert_close(out.terms["uniform"], want)
    if variant == "ori":
        torch.testing.assert_close(out.terms["align"], alignment(z1, z2))
