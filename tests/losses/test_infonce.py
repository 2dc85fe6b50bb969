"""InfoNCE against a loop re-implementation of its formula, sentence-transformers' MNRL, and error paths."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from csrl.errors import CsrlError
from csrl.losses import build_loss
from csrl.losses.infonce import InfoNCE, info_nce

B, D = 6, 8


def _views(seed: int, hard: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(B, D, generator=g, dtype=torch.float64)
    z2 = z1 + 0.7 * torch.randn(B, D, generator=g, dtype=torch.float64)
    hn = torch.randn(B, D, generator=g, dtype=torch.float64) if hard else None
    return z1, z2, hn


def ref_infonce(z1: Tensor, z2: Tensor, hn: Tensor | None, tau: float, beta: float = 0.0) -> Tensor:
    """-log( e^{s_ii/tau} / sum_j e^{s_ij/tau} ), j over positives then hard negatives; loops over scalars."""
    cands = [z2[j] for j in range(B)] + ([] if hn is None else [hn[j] for j in range(B)])
    total = z1.new_zeros(())
    for i in range(B):
        a = z1[i] / torch.sqrt((z1[i] * z1[i]).sum())
        logits = []
        for j, c in enumerate(cands):
            s = (a * c).sum() / torch.sqrt((c * c).sum())
            logits.append(s / tau + (beta if j == B + i else 0.0))
        denom = sum(torch.exp(x) for x in logits)
        total = total - torch.log(torch.exp(logits[i]) / denom)
    return total / B


@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize(("tau", "beta"), [(0.05, 0.0), (0.3, 0.0), (0.1, 0.7)])
def test_value_and_gradient_match_reference(hard: bool, tau: float, beta: float) -> None:
    z1, z2, hn = _views(1, hard)
    args = [t.clone().requires_grad_(True) for t in (z1, z2) + ((hn,) if hn is not None else ())]
    ours = info_nce(args[0], args[1], args[2] if hard else None, temperature=tau, hard_negative_weight=beta)
    ref_args = [t.clone().requires_grad_(True) for t in args]
    ref = ref_infonce(ref_args[0], ref_args[1], ref_args[2] if hard else None, tau, beta if hard else 0.0)
    assert ours.total.item() == pytest.approx(ref.item(), abs=1e-6)
    g_ours = torch.autograd.grad(ours.total, args)
    g_ref = torch.autograd.grad(ref, ref_args)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert set(ours.terms) == {"infonce"}


@pytest.mark.parametrize("hard", [False, True])
def test_equals_sentence_transformers_mnrl(hard: bool) -> None:
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    z1, z2, hn = _views(2, hard)
    tau = 0.05
    mnrl = MultipleNegativesRankingLoss(None, scale=1 / tau)  # type: ignore[arg-type]
    embeddings = [z1, z2] + ([hn] if hn is not None else [])
    expected = mnrl.compute_loss_from_embeddings(embeddings, None)  # type: ignore[arg-type]
    assert info_nce(z1, z2, hn, temperature=tau).total.item() == pytest.approx(expected.item(), abs=1e-9)


def test_invariances() -> None:
    z1, z2, hn = _views(3, True)
    loss = InfoNCE(temperature=0.1)
    base = loss(z1, z2, hn).total
    # Cosines: positive rescaling of any row changes nothing.
    scale = torch.rand(B, 1, dtype=torch.float64) + 0.5
    assert loss(z1 * scale, z2 * 3.0, hn * scale).total.item() == pytest.approx(base.item(), abs=1e-12)
    # Relabelling the batch (same permutation of anchors, positives, hard negatives) changes nothing.
    perm = torch.randperm(B)
    assert loss(z1[perm], z2[perm], hn[perm]).total.item() == pytest.approx(base.item(), abs=1e-12)  # type: ignore[index]
    # Temperature limit: tau * L -> mean_i relu(max_{j != i} s_ij - s_ii) = MPT with margin 0 (error <= tau log M).
    tau = 1e-4
    limit = build_loss("mpt", margin=0.0)(z1, z2, hn).total.item()
    assert tau * info_nce(z1, z2, hn, temperature=tau).total.item() == pytest.approx(limit, abs=tau * math.log(2 * B))
    # Swapping views is the transposed problem (one-directional loss): equals reference with roles swapped.
    assert loss(z2, z1).total.item() == pytest.approx(ref_infonce(z2, z1, None, 0.1).item(), abs=1e-9)
    # Perfect alignment with orthogonal rows: loss -> log(1 + (B-1) e^{-1/tau}).
    eye = torch.eye(B, D, dtype=torch.float64)
    expected = math.log(1 + (B - 1) * math.exp(-1 / 0.1))
    assert loss(eye, eye).total.item() == pytest.approx(expected, abs=1e-12)


def test_errors() -> None:
    z1, z2, _ = _views(4)
    with pytest.raises(ValueError, match="batch size must be >= 2"):
        info_nce(z1[:1], z2[:1])
    with pytest.raises(ValueError, match="same shape|both be"):
        info_nce(z1, z2[:, :4])
    with pytest.raises(ValueError, match="hard_neg"):
        info_nce(z1, z2, z2[:3])
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(CsrlError, match="temperature"):
            build_loss("infonce", temperature=bad)
    with pytest.raises(CsrlError, match="hard_negative_weight"):
        build_loss("infonce", hard_negative_weight=float("nan"))
