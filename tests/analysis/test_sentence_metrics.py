"""Sentence-level metrics vs independent numpy / scipy / scikit-learn versions, and known geometry."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.decomposition import PCA
from sklearn.metrics.pairwise import cosine_similarity

from csrl.analysis import sentence_metrics as sm

TOL = 1e-6


def rand(seed: int, n: int = 30, dim: int = 8, offset: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64) + offset * torch.randn(dim, generator=g)


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


# ---------------------------------------------------------------- alignment / uniformity
@pytest.mark.parametrize("alpha", [2.0, 1.0, 3.0])
def test_alignment_matches_loop(alpha):
    x, y = rand(0), rand(1)
    xs, ys = unit(x.numpy()), unit(y.numpy())
    expected = np.mean([np.linalg.norm(a - b) ** alpha for a, b in zip(xs, ys, strict=True)])
    assert float(sm.alignment(x, y, alpha=alpha)) == pytest.approx(expected, abs=TOL)


def test_alignment_without_normalisation_and_identity():
    x, y = rand(0), rand(1)
    expected = np.mean(np.sum((x.numpy() - y.numpy()) ** 2, axis=1))
    assert float(sm.alignment(x, y, normalize=False)) == pytest.approx(expected, rel=1e-9)
    assert float(sm.alignment(x, 3.0 * x)) == pytest.approx(0.0, abs=TOL)  # same directions
    with pytest.raises(ValueError):
        sm.alignment(x, y[:-1])


@pytest.mark.parametrize("t", [2.0, 0.5])
def test_uniformity_matches_loop(t):
    x = rand(2)
    xs = unit(x.numpy())
    vals = [np.exp(-t * np.sum((xs[i] - xs[j]) ** 2)) for i, j in itertools.combinations(range(len(xs)), 2)]
    assert float(sm.uniformity(x, t=t)) == pytest.approx(math.log(np.mean(vals)), abs=TOL)


def test_uniformity_known_values_and_errors():
    same = torch.ones(5, 3)
    assert float(sm.uniformity(same)) == pytest.approx(0.0, abs=TOL)  # all coincident: log 1
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert float(sm.uniformity(antipodal)) == pytest.approx(-8.0, abs=1e-5)  # -t * 4
    with pytest.raises(ValueError):
        sm.uniformity(torch.ones(1, 3))


def test_alignment_uniformity_gradients_are_finite_with_duplicates():
    x = rand(3, n=6).float()
    x[1] = x[0]  # coincident points
    x.requires_grad_(True)
    y = x.detach().clone() + 0.1
    (sm.alignment(x, y) + sm.uniformity(x)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_average_cosine_matches_sklearn():
    x = rand(4)
    cos = cosine_similarity(x.numpy())
    n = len(cos)
    assert sm.average_cosine(x) == pytest.approx((cos.sum() - n) / (n * (n - 1)), abs=TOL)


# ---------------------------------------------------------------- IsoScore
def isoscore_reference(points: np.ndarray) -> float:
    """Rudman et al. 2022, steps as in the paper: sklearn PCA, covariance diagonal, distance to identity."""
    n_dim = points.shape[1]
    rotated = PCA(n_components=n_dim).fit_transform(points)
    diag = np.diag(np.cov(rotated.T))
    normalised = math.sqrt(n_dim) * diag / np.linalg.norm(diag)
    delta = np.linalg.norm(normalised - np.ones(n_dim)) / math.sqrt(2 * (n_dim - math.sqrt(n_dim)))
    phi = (n_dim - delta**2 * (n_dim - math.sqrt(n_dim))) ** 2 / n_dim**2
    return (n_dim * phi - 1) / (n_dim - 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_isoscore_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3.0, 1.0, 1.0, 0.5, 0.1])
    x = x @ torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))[0]  # rotate
    assert sm.isoscore(x) == pytest.approx(isoscore_reference(x.numpy()), abs=TOL)


def test_isoscore_extremes():
    g = torch.Generator().manual_seed(0)
    assert sm.isoscore(torch.randn(20000, 10, generator=g)) > 0.98  # isotropic Gaussian
    line = torch.randn(500, 1, generator=g) * torch.randn(1, 10, generator=g)  # all variance on one axis
    assert sm.isoscore(line) == pytest.approx(0.0, abs=1e-6)
    half = torch.cat([torch.randn(20000, 5, generator=g), torch.zeros(20000, 5)], dim=1)
    assert 0.3 < sm.isoscore(half) < 0.6  # half the dimensions used
    with pytest.raises(ValueError):
        sm.isoscore(torch.ones(10, 4))


# ---------------------------------------------------------------- I(W)
def partition_reference(w: np.ndarray) -> float:
    _, vecs = np.linalg.eigh(w.T @ w)
    z = [np.sum(np.exp(w @ (sign * vecs[:, i]))) for i in range(w.shape[1]) for sign in (1.0, -1.0)]
    return min(z) / max(z)


def test_partition_isotropy_matches_loop():
    x = rand(5, n=50, dim=6) * 0.5
    assert sm.partition_isotropy(x) == pytest.approx(partition_reference(x.numpy()), abs=TOL)


def test_partition_isotropy_known_geometry_and_sign_invariance():
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(20000, 10, generator=g, dtype=torch.float64)
    assert sm.partition_isotropy(iso) > 0.9
    assert sm.partition_isotropy(iso) == pytest.approx(sm.partition_isotropy(-iso), abs=TOL)
    shifted = iso + 5.0 * torch.randn(10, generator=g, dtype=torch.float64)
    assert sm.partition_isotropy(shifted) < 0.01
    big = iso * 100.0  # would overflow exp() without logsumexp
    assert 0.0 <= sm.partition_isotropy(big) <= 1.0


# ---------------------------------------------------------------- spectrum, effective rank
def test_singular_spectrum_matches_scipy():
    x = rand(6, n=40, dim=12)
    np.testing.assert_allclose(sm.singular_spectrum(x).numpy(), scipy.linalg.svdvals(x.numpy()), atol=TOL)
    xc = x.numpy() - x.numpy().mean(axis=0)
    np.testing.assert_allclose(sm.singular_spectrum(x, center=True).numpy(), scipy.linalg.svdvals(xc), atol=TOL)
    norm = sm.singular_spectrum(x, normalize=True)
    assert float(norm[0]) == pytest.approx(1.0) and bool((norm[:-1] >= norm[1:]).all())


def test_effective_rank_matches_entropy_formula():
    x = rand(7, n=40, dim=12)
    s = np.linalg.svd(x.numpy(), compute_uv=False)
    p = s / s.sum()
    assert sm.effective_rank(x) == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-9)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_effective_rank_of_equal_singular_values(k):
    g = torch.Generator().manual_seed(k)
    u = torch.linalg.qr(torch.randn(50, k, generator=g, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(20, k, generator=g, dtype=torch.float64))[0]
    assert sm.effective_rank(4.0 * u @ v.T) == pytest.approx(float(k), abs=1e-6)
    assert sm.effective_rank(torch.zeros(5, 3)) == 0.0


def test_sentence_rogue_share_is_the_top_dimension_of_the_summed_cosine() -> None:
    import torch

    from csrl.analysis.registry import SentenceContext, get_metric

    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    x[:, 3] += 4.0  # one dominant shared direction
    u = x / x.norm(dim=1, keepdim=True)
    off = (u @ u.T).sum() - u.shape[0]
    per_dim = torch.stack([u[:, d].sum() ** 2 - (u[:, d] ** 2).sum() for d in range(8)])
    value = get_metric("sentence_rogue_share").compute(SentenceContext(x, None))
    assert value == pytest.approx(float((per_dim / off).max()), rel=1e-9)
    assert value == pytest.approx(float(per_dim[3] / off), rel=1e-9) and value > 0.9
