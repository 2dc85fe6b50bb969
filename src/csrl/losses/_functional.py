"""Pure tensor functions shared by the losses and the gradient paradigm.

(The Wang & Isola alignment and uniformity metrics live in :mod:`csrl.analysis.sentence_metrics`.)

Every cosine-similarity matrix a loss uses goes through :func:`similarity` (or :func:`cross_cosine`),
tagged with the views of its rows and columns:

- ``"01"``: rows view-0 anchors (``z1``), columns view-1 candidates (``z2``, then ``hard_neg``);
- ``"10"``: rows view 1, columns view 0 (the reverse direction of a symmetrised loss);
- ``"00"`` / ``"11"``: same-view matrices.

Inside :func:`record_similarities` each such matrix is appended to a list, which is how
:func:`csrl.losses.paradigm.effective_decomposition` reads dL/dS off any loss without re-deriving it.
Outside that context the hook costs one context-variable lookup.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

PAIRS = ("01", "10", "00", "11")


class ClosedForm(NamedTuple):
    """Per-anchor GD (B,), W over the cross-view candidates (B, M) and R (B,) of a loss's closed form."""

    gd: Tensor
    w: Tensor
    r: Tensor


class Recorded(NamedTuple):
    """One recorded similarity matrix ``s = rows @ cols.T`` and its view tag ``pair``."""

    pair: str
    s: Tensor
    rows: Tensor
    cols: Tensor


_RECORDER: ContextVar[list[Recorded] | None] = ContextVar("csrl_similarity_recorder", default=None)

# Smallest squared distance of MET (papers.md 1.2): d = sqrt(clamp_min(2 - 2 s, 1e-4)).
MET_MIN_SQ_DIST = 1e-4
# Cosines are clamped to [-1 + eps, 1 - eps] before arccos so the angle's gradient stays finite.
ARCCOS_EPS = 1e-6


@contextmanager
def record_similarities() -> Iterator[list[Recorded]]:
    """Collect a :class:`Recorded` for every :func:`similarity` computed inside the ``with`` block."""
    store: list[Recorded] = []
    token = _RECORDER.set(store)
    try:
        yield store
    finally:
        _RECORDER.reset(token)


def similarity(a: Tensor, b: Tensor, *, pair: str) -> Tensor:
    """(n, m) dot products ``a @ b.T`` of already L2-normalised rows, i.e. cosines; recorded under ``pair``."""
    if pair not in PAIRS:
        raise ValueError(f"pair must be one of {PAIRS}, got {pair!r}")
    s = a @ b.T
    store = _RECORDER.get()
    if store is not None:
        store.append(Recorded(pair, s, a, b))
    return s


def cross_cosine(z1: Tensor, cands: Tensor) -> Tensor:
    """S_ij = cos(z1_i, cands_j), (B, M), for raw (unnormalised) inputs; the anchor-view matrix ``"01"``."""
    return similarity(F.normalize(z1, dim=-1), F.normalize(cands, dim=-1), pair="01")


def candidates(z2: Tensor, hard_neg: Tensor | None) -> Tensor:
    """Columns of the anchor-view matrix: the positives ``z2`` followed by the hard negatives, (M, D)."""
    return z2 if hard_neg is None else torch.cat([z2, hard_neg], dim=0)


def check_pair(z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None, *, name: str) -> None:
    """Shape checks shared by every loss: (B, D) views with B >= 2 (in-batch negatives need two rows)."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"{name}: z1 and z2 must both be (batch, dim), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"{name}: batch size must be >= 2 (in-batch negatives need another row), got 1")
    if hard_neg is not None and hard_neg.shape != z1.shape:
        raise ValueError(f"{name}: hard_neg must have the shape of z1 {tuple(z1.shape)}, got {tuple(hard_neg.shape)}")


def check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def check_range(name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be in [{low:g}, {high:g}], got {value}")


def diag_mask(n: int, m: int, device: torch.device) -> Tensor:
    """(n, m) boolean mask, True on the positive (j == i) of each row."""
    return torch.eye(n, m, dtype=torch.bool, device=device)


def negatives_max(s: Tensor) -> Tensor:
    """max_{j != i} S_ij per row: the hardest negative's cosine, (B,). Diagonal excluded by a boolean mask."""
    pos = diag_mask(s.shape[0], s.shape[1], s.device)
    return s.masked_fill(pos, float("-inf")).amax(dim=1)


def hardest_negative(s: Tensor) -> Tensor:
    """argmax_{j != i} S_ij per row, (B,) long."""
    pos = diag_mask(s.shape[0], s.shape[1], s.device)
    return s.masked_fill(pos, float("-inf")).argmax(dim=1)


def diagonal_cross_entropy(logits: Tensor) -> Tensor:
    """mean_i -log softmax_j(logits_ij)[i]: cross-entropy of (B, M) logits whose row i has its positive in column i."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels)


def one_hot_hardest(s: Tensor) -> Tensor:
    """(B, M) one-hot W on the hardest negative argmax_{j != i} S_ij (the hinge losses' W)."""
    return F.one_hot(hardest_negative(s), s.shape[1]).to(s.dtype)


def unit_scale(cos: Tensor) -> Tensor:
    """c_i = 1 for every anchor of the (B, M) cosine matrix ``cos``: a loss whose gradient has no extra scale."""
    return cos.new_ones(cos.shape[0])


def safe_arccos(s: Tensor) -> Tensor:
    """arccos with the argument clamped to [-1 + ARCCOS_EPS, 1 - ARCCOS_EPS]."""
    return torch.arccos(s.clamp(-1 + ARCCOS_EPS, 1 - ARCCOS_EPS))


def met_distance(s: Tensor) -> Tensor:
    """d = sqrt(clamp_min(2 - 2 s, 1e-4)): Euclidean distance of unit vectors with cosine ``s``."""
    return (2 - 2 * s).clamp_min(MET_MIN_SQ_DIST).sqrt()


def gate_rows(x: Tensor, keep: Tensor) -> Tensor:
    """Rows with ``keep`` True pass unchanged; the others are detached (no gradient flows into them)."""
    return torch.where(keep[:, None], x, x.detach())


def off_diagonal_softmax(s: Tensor, temperature: float) -> Tensor:
    """W_ij = softmax_{j != i}(S_ij / temperature), zero on the diagonal; rows sum to 1."""
    pos = diag_mask(s.shape[0], s.shape[1], s.device)
    return torch.softmax((s / temperature).masked_fill(pos, float("-inf")), dim=1)


def off_diagonal_power(s: Tensor, power: float, floor: float = 1e-4) -> Tensor:
    """W_ij = clamp_min(S_ij, floor)^power / sum_{k != i} clamp_min(S_ik, floor)^power, zero diagonal."""
    pos = diag_mask(s.shape[0], s.shape[1], s.device)
    w = s.clamp_min(floor).pow(power).masked_fill(pos, 0.0)
    return w / w.sum(dim=1, keepdim=True)


# --- paper B's "mod" switches for the non-contrastive objectives (papers.md 1.6) ---------------------------

SWITCHES = ("w_gd", "w_w", "w_r")


def parse_variant(variant: str, *, name: str, allowed: tuple[str, ...] = SWITCHES) -> frozenset[str]:
    """``"ori"`` -> no switch; ``"mod"`` -> every switch in ``allowed``; else a ``.``/``+``-joined subset
    of ``allowed`` (the reference's spelling, e.g. ``"w_gd.w_r"``)."""
    if variant == "ori":
        return frozenset()
    if variant == "mod":
        return frozenset(allowed)
    parts = [p for p in variant.replace("+", ".").split(".") if p]
    bad = sorted(set(parts) - set(allowed))
    if not parts or bad:
        raise ValueError(
            f"{name}: variant must be 'ori', 'mod' or a '.'-joined subset of {', '.join(allowed)}; got {variant!r}"
        )
    return frozenset(parts)


def gd_keep(h: Tensor, gd_margin: float) -> Tensor:
    """``w_gd`` mask, (B,) bool: True where 1 - max_{k != i} cos(h_i, h_k) < gd_margin (same view, detached).

    h: (B, D) L2-normalised. Anchors whose nearest same-view neighbour is farther than the margin are
    detached by :func:`gate_rows`: their gradient is dissipated.
    """
    hd = h.detach()
    return 1 - negatives_max(hd @ hd.T) < gd_margin


def gated_views(z1: Tensor, z2: Tensor, switches: frozenset[str], gd_margin: float) -> tuple[Tensor, Tensor]:
    """The two views L2-normalised, each passed through the ``w_gd`` gate when that switch is on."""
    u, v = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    if "w_gd" in switches:
        u, v = gate_rows(u, gd_keep(u, gd_margin)), gate_rows(v, gd_keep(v, gd_margin))
    return u, v


def check_no_hard_neg(hard_neg: Tensor | None, name: str) -> None:
    if hard_neg is not None:
        raise ValueError(f"{name}: hard negatives are not supported by this objective (use infonce, arccon, mpt, ...)")


def strict_lower(n: int, device: torch.device) -> Tensor:
    """(n, n) boolean mask of the strict lower triangle: each unordered pair {i, k}, i != k, once."""
    return torch.tril(torch.ones(n, n, dtype=torch.bool, device=device), diagonal=-1)
