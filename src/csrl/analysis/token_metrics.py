"""Token-level geometry of one layer (paper A, Xiao et al. 2023, section 2.2 of papers.md).

All functions take one layer's packed token vectors ``x`` (n_tokens, dim): non-padding tokens of all
sentences concatenated in order, as in :class:`PackedTokenStates`, with ``sentence_index``
(n_tokens,) and ``offsets`` (n_sentences + 1,). Row-wise work is float32 (large float64 copies cost more
than the metrics); sums are taken to float64 before the final formulas.

Every "mean off-diagonal cosine" uses the segment-sum identity: for k unit vectors u_1..u_k,

    sum_{a != b} cos(u_a, u_b) = ||sum_a u_a||^2 - k,   mean = (||sum_a u_a||^2 - k) / (k (k - 1)),

so a whole layer costs O(n_tokens * dim) and many groups are handled at once with ``index_add``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

_EPS = 1e-12


class PackedTokenStates(Protocol):
    """Every layer's token vectors for a list of sentences, packed without padding.

    layers: L + 1 tensors (n_tokens, dim), index 0 = embedding output. token_ids, sentence_index:
    (n_tokens,) int64. offsets: (n_sentences + 1,) int64, sentence s is rows offsets[s]:offsets[s+1].
    pooled: (n_sentences, dim) sentence embeddings, or None. ``csrl.models.encoder.TokenStates`` is one.
    """

    @property
    def layers(self) -> Sequence[Tensor]: ...

    @property
    def token_ids(self) -> Tensor: ...

    @property
    def sentence_index(self) -> Tensor: ...

    @property
    def offsets(self) -> Tensor: ...

    @property
    def pooled(self) -> Tensor | None: ...


def unit_rows(x: Tensor) -> Tensor:
    """Rows of ``x`` (n, dim) scaled to unit L2 norm, float32 or float64 as given (zero rows stay zero)."""
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    return xf / xf.norm(dim=1, keepdim=True).clamp_min(_EPS)


def _cos_mean_from_sum(s: Tensor, k: Tensor | int) -> Tensor:
    """(||s||^2 - k) / (k (k - 1)) in float64, along the last dim of s."""
    s64 = s.to(torch.float64)
    k64 = torch.as_tensor(k, dtype=torch.float64)
    return ((s64 * s64).sum(dim=-1) - k64) / (k64 * (k64 - 1))


def mean_pairwise_cosine(x: Tensor) -> float:
    """Mean cosine over ordered pairs a != b of the rows of ``x`` (n, dim), n >= 2.

    (||sum_a u_a||^2 - n) / (n (n - 1)) with u_a = x_a / ||x_a||; equals the mean off-diagonal entry
    of the cosine matrix. Also the sentence-level "average cosine".
    """
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"mean_pairwise_cosine needs at least 2 rows, got {n}")
    return float(_cos_mean_from_sum(unit_rows(x.to(torch.float64)).sum(dim=0), n))


# ---------------------------------------------------------------- anisotropy baseline
def sample_one_token_per_sentence(
    offsets: Tensor, *, n_samples: int = 1000, generator: torch.Generator | None = None
) -> Tensor:
    """Rows for the anisotropy baseline: min(n_samples, n_sentences) sentences drawn without
    replacement, then one uniformly random token of each (Ethayarajh 2019; one per sentence avoids a
    bias toward long sentences). Returns int64 rows (m,). Empty sentences are never drawn."""
    lengths = offsets[1:] - offsets[:-1]
    candidates = torch.nonzero(lengths > 0).flatten()
    m = min(n_samples, candidates.numel())
    chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:m]]
    u = torch.rand(m, generator=generator, dtype=torch.float64)
    within = (u * lengths[chosen].to(torch.float64)).floor().to(torch.long)
    within = torch.minimum(within, lengths[chosen] - 1)
    return offsets[chosen] + within


def anisotropy_baseline(x: Tensor, rows: Tensor) -> float:
    """Mean off-diagonal cosine among ``x[rows]``: (sum S - m) / (m (m - 1)) over the m sampled tokens.

    rows: from :func:`sample_one_token_per_sentence`. Near 0 = isotropic, near 1 = one narrow cone.
    """
    return mean_pairwise_cosine(x[rows])


# ---------------------------------------------------------------- self-similarity
@dataclass(frozen=True)
class OccurrenceIndex:
    """Which rows enter self-similarity (layer independent; build once per corpus).

    token_ids: (T,) qualifying ids, ascending. counts: (T,) total occurrences in the corpus.
    n_contexts: (T,) sentences containing the id (k >= 2). rows: (M,) row of the first occurrence of
    each qualifying id in each sentence containing it. group: (M,) index into token_ids for each row.
    row_group: (n_tokens,) the group of every row, T for rows that do not enter (a dump slot, so
    segment sums need no gather).
    """

    token_ids: Tensor
    counts: Tensor
    n_contexts: Tensor
    rows: Tensor
    group: Tensor
    row_group: Tensor


def occurrence_index(token_ids: Tensor, sentence_index: Tensor, *, min_count: int = 5) -> OccurrenceIndex:
    """Token ids with >= ``min_count`` total (non-padding) occurrences and >= 2 containing sentences.

    Paper A's ``Counter`` counts every occurrence (repeats within a sentence included), not sentences;
    ids seen in one sentence only have no off-diagonal pair and are dropped, as in its code. Only the
    first occurrence per sentence is used.
    """
    ids = token_ids.to(torch.long)
    n = ids.numel()
    vocab = int(ids.max()) + 1 if n else 1
    key = sentence_index.to(torch.long) * vocab + ids
    uniq, inverse = torch.unique(key, return_inverse=True)
    first = torch.full((uniq.numel(),), n, dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(n), reduce="amin")
    uniq_ids = uniq % vocab
    counts = torch.bincount(ids, minlength=vocab)
    contexts = torch.bincount(uniq_ids, minlength=vocab)
    keep = (counts >= min_count) & (contexts >= 2)
    qualifying = torch.nonzero(keep).flatten()
    slot = torch.full((vocab,), -1, dtype=torch.long)
    slot[qualifying] = torch.arange(qualifying.numel())
    sel = keep[uniq_ids]
    rows, group = first[sel], slot[uniq_ids[sel]]
    row_group = torch.full((n,), qualifying.numel(), dtype=torch.long)
    row_group[rows] = group
    return OccurrenceIndex(
        token_ids=qualifying,
        counts=counts[qualifying],
        n_contexts=contexts[qualifying],
        rows=rows,
        group=group,
        row_group=row_group,
    )


def group_unit_sums(u: Tensor, index: OccurrenceIndex) -> Tensor:
    """(T, dim) float64: S_t = sum of the unit vectors ``u`` (n_tokens, dim) of token t's first
    occurrences (one ``index_add`` over all rows; non-entering rows land in a dropped slot)."""
    t = index.token_ids.numel()
    out = torch.zeros((t + 1, u.shape[1]), dtype=u.dtype).index_add_(0, index.row_group, u)
    return out[:t].to(torch.float64)


def self_similarity(x: Tensor, index: OccurrenceIndex) -> Tensor:
    """Per qualifying token (T,) float64: mean off-diagonal cosine among its occurrences,
    (||S_t||^2 - k_t) / (k_t (k_t - 1)), S_t the sum of the k_t unit vectors (Ethayarajh 2019)."""
    return self_similarity_from_sums(group_unit_sums(unit_rows(x), index), index)


def self_similarity_from_sums(sums: Tensor, index: OccurrenceIndex) -> Tensor:
    """:func:`self_similarity` given the (T, dim) sums of :func:`group_unit_sums`."""
    return _cos_mean_from_sum(sums, index.n_contexts)


# ---------------------------------------------------------------- intra-sentence similarity, norms
def intra_sentence_similarity(x: Tensor, sentence_index: Tensor, n_sentences: int) -> Tensor:
    """Per sentence (n_sentences,) float64: mean over its tokens of cos(x_i, m_s), with m_s the mean of
    the sentence's token vectors at this layer (mask-aware mean pooling, special tokens included).

    Sentences without tokens give NaN. Computed from segment sums: the sum over the sentence of
    cos(x_i, m_s) is (sum_i u_i) . m_s / ||m_s||, with u_i the unit vectors.
    """
    return intra_similarity_from_units(x, unit_rows(x), sentence_index, n_sentences)


def intra_similarity_from_units(x: Tensor, u: Tensor, sentence_index: Tensor, n_sentences: int) -> Tensor:
    """:func:`intra_sentence_similarity` given ``u = unit_rows(x)``."""
    idx = sentence_index.to(torch.long)
    dim = x.shape[1]
    length = torch.bincount(idx, minlength=n_sentences).to(torch.float64)
    sum_x = torch.zeros((n_sentences, dim), dtype=u.dtype).index_add_(0, idx, x.to(u.dtype))
    sum_u = torch.zeros((n_sentences, dim), dtype=u.dtype).index_add_(0, idx, u)
    mean_dir = unit_rows(sum_x.to(torch.float64))  # direction of the mean-pooled vector
    return (sum_u.to(torch.float64) * mean_dir).sum(dim=1) / length


def token_norms(x: Tensor) -> Tensor:
    """L2 norm of every token vector (n_tokens,) float64 ("distance to the origin")."""
    return x.float().norm(dim=1).to(torch.float64)


# ---------------------------------------------------------------- rogue dimensions
def rogue_dimension_shares(x: Tensor, *, include_self_pairs: bool = False) -> Tensor:
    """Share of each dimension in the summed pairwise cosine of the rows of ``x`` (n, dim) -> (dim,).

    With u_a = x_a / ||x_a|| and S = sum_a u_a (Timkey & van Schijndel 2021):
      include_self_pairs=False:  share_d = (S_d^2 - sum_a u_ad^2) / (||S||^2 - n)   (pairs a != b; the
                                 decomposition of the mean off-diagonal cosine, e.g. the anisotropy);
      include_self_pairs=True:   share_d = S_d^2 / ||S||^2   (all pairs a, b, as paper A's code does).
    Shares sum to 1; a few dominant dimensions are "rogue".
    """
    u = unit_rows(x.to(torch.float64))
    s = u.sum(dim=0)
    if include_self_pairs:
        return s * s / (s.dot(s)).clamp_min(_EPS)
    num = s * s - (u * u).sum(dim=0)
    return num / (s.dot(s) - u.shape[0])


def token_rogue_shares(x: Tensor, index: OccurrenceIndex) -> Tensor:
    """(T, dim): :func:`rogue_dimension_shares` with self pairs on each token's occurrence set."""
    return rogue_shares_from_sums(group_unit_sums(unit_rows(x), index))


def rogue_shares_from_sums(sums: Tensor) -> Tensor:
    """Row-wise S_d^2 / ||S||^2 of (T, dim) unit-vector sums (see :func:`token_rogue_shares`)."""
    return sums * sums / (sums * sums).sum(dim=1, keepdim=True).clamp_min(_EPS)


def top_dimensions(shares: Tensor, k: int) -> tuple[list[int], list[float]]:
    """The ``k`` largest shares (descending) and their dimension indices."""
    values, dims = torch.topk(shares, min(k, shares.numel()))
    return [int(d) for d in dims.tolist()], [float(v) for v in values.tolist()]


# ---------------------------------------------------------------- grouped means
def masked_mean(values: Tensor, mask: Tensor) -> float:
    """Mean of ``values[mask]``; NaN when the mask is empty."""
    sel = values[mask]
    return float(sel.mean()) if sel.numel() else float("nan")


def frequency_buckets(counts: Tensor, edges: Sequence[int]) -> Tensor:
    """Bucket of each count: i with edges[i] <= count < edges[i+1]; the last bucket is open-ended.

    Counts below edges[0] get -1. Log-spaced edges (e.g. 5, 10, 20, 50, ...) suit Zipfian counts."""
    bounds = torch.tensor(list(edges), dtype=counts.dtype)
    return torch.bucketize(counts, bounds, right=True) - 1


# ---------------------------------------------------------------- one layer, shared work
@dataclass(frozen=True)
class LayerTokenMetrics:
    """Everything of one layer. anisotropy: (n_samples,) one value per row sample. self_similarity:
    (T,). intra_similarity: (n_sentences,). norms: (n_tokens,). rogue_shares: (dim,) pairs a != b of the
    first anisotropy sample. token_rogue_shares: (dim,) mean over tokens of their shares (self pairs in)."""

    anisotropy: Tensor
    self_similarity: Tensor
    intra_similarity: Tensor
    norms: Tensor
    rogue_shares: Tensor
    token_rogue_shares: Tensor


def layer_token_metrics(
    x: Tensor,
    *,
    sentence_index: Tensor,
    n_sentences: int,
    index: OccurrenceIndex,
    sample_rows: Sequence[Tensor],
) -> LayerTokenMetrics:
    """The token metrics of one layer x (n_tokens, dim) from a single pass of unit vectors; the same
    values as the individual functions (:func:`anisotropy_baseline`, :func:`self_similarity`, ...)."""
    xf = x.float()
    norms = xf.norm(dim=1)
    u = xf / norms.clamp_min(_EPS).unsqueeze(1)
    sums = group_unit_sums(u, index)
    token_shares = rogue_shares_from_sums(sums)
    return LayerTokenMetrics(
        anisotropy=torch.tensor([mean_pairwise_cosine(u[r]) for r in sample_rows], dtype=torch.float64),
        self_similarity=self_similarity_from_sums(sums, index),
        intra_similarity=intra_similarity_from_units(xf, u, sentence_index, n_sentences),
        norms=norms.to(torch.float64),
        rogue_shares=rogue_dimension_shares(u[sample_rows[0]]),
        token_rogue_shares=token_shares.mean(dim=0) if token_shares.shape[0] else token_shares.sum(dim=0),
    )
