"""Sentence-level geometry: alignment, uniformity, average cosine, IsoScore, I(W), effective rank.

Inputs are embeddings ``x`` (n, dim), one row per sentence. ``alignment`` and ``uniformity`` are the
canonical differentiable versions (Wang & Isola 2020) that the ``mhe`` loss reuses; the rest return
floats computed in float64 without gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from csrl.analysis.token_metrics import mean_pairwise_cosine

__all__ = [
    "alignment",
    "average_cosine",
    "effective_rank",
    "isoscore",
    "partition_isotropy",
    "singular_spectrum",
    "uniformity",
]


def alignment(x: Tensor, y: Tensor, alpha: float = 2.0, *, normalize: bool = True) -> Tensor:
    """E_i ||f(x_i) - f(y_i)||_2^alpha over positive pairs (rows of x and y), a 0-dim tensor.

    x, y: (n, dim), paired by row. normalize: L2-normalise rows first (the metric is defined on the unit
    sphere; raw vectors give values in the hundreds). Lower = positives closer. Differentiable.
    Relations: the alignment term of the ``mhe`` loss; 2 - 2 cos(x_i, y_i) for alpha = 2.
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"alignment needs two (n, dim) tensors of equal shape, got {x.shape} and {y.shape}")
    if normalize:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    sq = (x - y).pow(2).sum(dim=1)
    return sq.pow(alpha / 2).mean()


def uniformity(x: Tensor, t: float = 2.0, *, normalize: bool = True) -> Tensor:
    """log E_{i<j} exp(-t ||f(x_i) - f(x_j)||_2^2) over distinct pairs of rows, a 0-dim tensor.

    x: (n, dim), n >= 2. Squared distances come from the Gram matrix (2 - 2 x_i.x_j on the sphere) and
    the mean from a logsumexp over the off-diagonal entries, so it is stable and has finite gradients
    for coincident points. Memory O(n^2). Lower (more negative) = more uniform; tends to -inf for tiny sets.
    """
    n = x.shape[0]
    if x.dim() != 2 or n < 2:
        raise ValueError(f"uniformity needs an (n, dim) tensor with n >= 2, got {tuple(x.shape)}")
    if normalize:
        x = F.normalize(x, dim=-1)
    sq_norm = x.pow(2).sum(dim=1)
    sq = (sq_norm[:, None] + sq_norm[None, :] - 2 * (x @ x.T)).clamp_min(0.0)
    # every unordered pair appears twice off the diagonal, so the mean over ordered pairs is the same
    eye = torch.eye(n, dtype=torch.bool, device=x.device)
    logits = (-t * sq).masked_fill(eye, float("-inf"))
    return torch.logsumexp(logits.flatten(), dim=0) - math.log(n * (n - 1))


def average_cosine(x: Tensor) -> float:
    """Mean cosine between distinct rows of x (n, dim): (||sum u||^2 - n) / (n (n - 1))."""
    return mean_pairwise_cosine(x)


def _covariance_eigenvalues(x: Tensor) -> Tensor:
    x64 = x.detach().to(torch.float64)
    xc = x64 - x64.mean(dim=0, keepdim=True)
    cov = xc.T @ xc / max(x64.shape[0] - 1, 1)
    return torch.linalg.eigvalsh(cov).clamp_min(0.0).flip(0)


def isoscore(x: Tensor) -> float:
    """IsoScore (Rudman et al. 2022) of a point cloud x (n, dim), in [0, 1].

    1. PCA-rotate: the variances along the principal axes are the eigenvalues lambda (dim,) of cov(x).
    2. Normalise the diagonal: s = sqrt(d) lambda / ||lambda||  (so ||s|| = ||1_d||).
    3. Distance to identity: delta = ||s - 1_d|| / sqrt(2 (d - sqrt(d)))  in [0, 1].
    4. Fraction of dimensions used: phi = (d - delta^2 (d - sqrt(d)))^2 / d^2  in [1/d, 1].
    5. IsoScore = (d phi - 1) / (d - 1): 1 for an isotropic cloud, 0 when all variance is in one direction.
    """
    d = x.shape[1]
    if d < 2:
        raise ValueError("isoscore needs dim >= 2")
    lam = _covariance_eigenvalues(x)
    norm = lam.norm()
    if float(norm) == 0.0:
        raise ValueError("isoscore is undefined for a point cloud without variance")
    s = math.sqrt(d) * lam / norm
    delta = float((s - 1).norm()) / math.sqrt(2 * (d - math.sqrt(d)))
    phi = (d - delta**2 * (d - math.sqrt(d))) ** 2 / d**2
    return (d * phi - 1) / (d - 1)


def partition_isotropy(x: Tensor) -> float:
    """I(W) = min_c Z(c) / max_c Z(c), Z(c) = sum_i exp(c . w_i) (Arora et al. 2016; Mu & Viswanath 2018).

    x: (n, dim), rows w_i, not centred. c ranges over the eigenvectors of W^T W with both signs (an
    eigensolver's sign is arbitrary, so +-c keeps the value well defined). Computed with logsumexp, so
    large norms do not overflow. 1 = isotropic; near 0 = a dominant common direction.
    """
    w = x.detach().to(torch.float64)
    _, vecs = torch.linalg.eigh(w.T @ w)
    log_z = torch.logsumexp(w @ torch.cat([vecs, -vecs], dim=1), dim=0)
    return math.exp(float(log_z.min() - log_z.max()))


def singular_spectrum(x: Tensor, *, center: bool = False, normalize: bool = False) -> Tensor:
    """Singular values of x (n, dim), descending, float64 (min(n, dim),).

    center: subtract the column mean first (the spectrum of the covariance, as in dimensional-collapse
    plots). normalize: divide by the largest singular value.
    """
    x64 = x.detach().to(torch.float64)
    if center:
        x64 = x64 - x64.mean(dim=0, keepdim=True)
    sv = torch.linalg.svdvals(x64)
    if normalize and float(sv[0]) > 0:
        sv = sv / sv[0]
    return sv


def effective_rank(x: Tensor, *, center: bool = False) -> float:
    """Effective rank (Roy & Vetterli 2007): exp(H(p)), p_k = sigma_k / sum_j sigma_j, H the Shannon
    entropy (natural log, 0 log 0 = 0). Between 1 and rank(x); exactly k for k equal singular values."""
    sv = singular_spectrum(x, center=center)
    total = sv.sum()
    if float(total) == 0.0:
        return 0.0
    p = sv / total
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))
