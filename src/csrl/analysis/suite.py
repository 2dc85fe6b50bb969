"""The whole geometry suite over an encoder's token states, and a cheap probe for training dynamics.

``analyze_token_states`` runs every token-level metric of paper A on every layer (plus the sentence-level
metrics when pooled embeddings are given) and returns an :class:`AnalysisResult` that serialises to
JSON. ``dynamics_probe`` computes a handful of last-layer numbers for a training callback.

Definitional choices (see papers.md 2.2):
- anisotropy baseline: one random token from each of min(1000, n) random sentences; the same rows are
  used for every layer (so layers are compared on the same tokens); several seeds can be averaged.
  Values are not rounded (paper A rounds to 3 decimals).
- self-similarity: ids with >= ``min_count`` total non-padding occurrences (paper A's ``Counter`` counts
  occurrences, not sentences) and >= 2 containing sentences; first occurrence per sentence.
- adjusted = raw - anisotropy baseline of the same layer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from csrl.analysis import sentence_metrics as sm
from csrl.analysis import token_metrics as tm
from csrl.analysis.function_words import CONTENT, FUNCTIONAL, KIND_NAMES, IdToToken, token_kinds
from csrl.models.encoder import Encoder, TokenStates

DEFAULT_FREQUENCY_EDGES: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 500, 1000)


def _jsonable(value: Any) -> Any:
    """NaN/inf -> None (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _floats(t: Tensor) -> list[float]:
    return [float(v) for v in t.tolist()]


def _mean(t: Tensor) -> float:
    return float(t.mean()) if t.numel() else float("nan")


@dataclass
class SentenceAnalysis:
    """Sentence-level geometry of pooled embeddings (n_sentences, dim)."""

    n_sentences: int
    dim: int
    average_cosine: float
    uniformity: float  # t = 2, normalised embeddings, all distinct pairs
    alignment: float | None  # alpha = 2 over positive pairs; None without pairs
    n_positive_pairs: int
    isoscore: float
    partition_isotropy: float  # I(W), raw (uncentred) embeddings
    effective_rank: float  # uncentred
    effective_rank_centered: float
    singular_values: list[float]  # uncentred, descending
    singular_values_centered: list[float]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass
class AnalysisResult:
    """Per-layer token geometry (index 0 = embedding output), plus optional sentence geometry."""

    n_sentences: int
    n_tokens: int
    n_layers: int
    dim: int
    min_count: int
    anisotropy_samples: int
    seeds: list[int]
    anisotropy: list[float]  # mean over seeds
    anisotropy_std: list[float]  # population std over seeds (0 with one seed)
    self_similarity: list[float]  # mean over qualifying tokens
    adjusted_self_similarity: list[float]
    intra_similarity: list[float]  # mean over sentences
    adjusted_intra_similarity: list[float]
    norm_mean: list[float]  # mean token L2 norm
    norm_std: list[float]
    functional_self_similarity: list[float]
    content_self_similarity: list[float]
    n_functional_tokens: int
    n_content_tokens: int
    frequency_edges: list[int]  # bucket b: edges[b] <= count < edges[b+1], last open-ended
    frequency_bucket_sizes: list[int]
    frequency_self_similarity: list[list[float]]  # [layer][bucket], NaN for empty buckets
    rogue_dims: list[list[int]]  # [layer][rank]: top dims of the anisotropy sample's mean cosine
    rogue_shares: list[list[float]]
    token_rogue_dims: list[list[int]]  # top dims of the mean per-token share (paper A, self pairs in)
    token_rogue_shares: list[list[float]]
    token_ids: list[int]  # qualifying ids, ascending
    token_counts: list[int]  # total occurrences
    token_contexts: list[int]  # containing sentences
    token_kinds: list[str]  # functional | content | other ("other" everywhere without a vocab)
    token_self_similarity: list[list[float]]  # [layer][token]
    sentence: SentenceAnalysis | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def to_json(self, indent: int | None = None) -> str:
        """Strict JSON (NaN becomes null)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisResult:
        """Inverse of :meth:`to_dict` (nulls in float lists come back as NaN)."""

        def fix(v: Any) -> Any:
            if v is None:
                return float("nan")
            if isinstance(v, list):
                return [fix(x) for x in v]
            return v

        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            v = data.get(f.name)
            if f.name == "sentence":
                kwargs[f.name] = None if v is None else SentenceAnalysis(**v)
            elif f.name == "extra":
                kwargs[f.name] = dict(v or {})
            else:
                kwargs[f.name] = fix(v)
        return cls(**kwargs)


# ---------------------------------------------------------------- sentence level
def analyze_sentence_embeddings(
    embeddings: Tensor, *, positive_pairs: tuple[Tensor, Tensor] | None = None
) -> SentenceAnalysis:
    """All sentence-level metrics of ``embeddings`` (n, dim); ``positive_pairs`` = (x, y), (m, dim) each."""
    emb = embeddings.detach().float()
    align: float | None = None
    n_pairs = 0
    if positive_pairs is not None:
        x, y = positive_pairs
        n_pairs = int(x.shape[0])
        align = float(sm.alignment(x.detach().float(), y.detach().float())) if n_pairs else None
    return SentenceAnalysis(
        n_sentences=int(emb.shape[0]),
        dim=int(emb.shape[1]),
        average_cosine=sm.average_cosine(emb),
        uniformity=float(sm.uniformity(emb.double())),
        alignment=align,
        n_positive_pairs=n_pairs,
        isoscore=sm.isoscore(emb),
        partition_isotropy=sm.partition_isotropy(emb),
        effective_rank=sm.effective_rank(emb),
        effective_rank_centered=sm.effective_rank(emb, center=True),
        singular_values=_floats(sm.singular_spectrum(emb)),
        singular_values_centered=_floats(sm.singular_spectrum(emb, center=True)),
    )


# ---------------------------------------------------------------- token level
def _anisotropy_rows(offsets: Tensor, n_samples: int, seeds: Sequence[int]) -> list[Tensor]:
    rows = []
    for s in seeds:
        gen = torch.Generator().manual_seed(s)
        rows.append(tm.sample_one_token_per_sentence(offsets, n_samples=n_samples, generator=gen))
    return rows


def _kinds(
    index: tm.OccurrenceIndex,
    vocab: IdToToken | None,
    functional: Collection[str] | None,
    special: Collection[str] | None,
) -> Tensor:
    if vocab is None:
        return torch.zeros_like(index.token_ids)
    return token_kinds(index.token_ids, vocab, functional=functional, special_tokens=special)


def analyze_token_states(
    states: TokenStates,
    *,
    vocab: IdToToken | None,
    functional: Collection[str] | None = None,
    special_tokens: Collection[str] | None = None,
    seed: int = 0,
    anisotropy_samples: int = 1000,
    anisotropy_seeds: int = 1,
    min_count: int = 5,
    frequency_edges: Sequence[int] = DEFAULT_FREQUENCY_EDGES,
    rogue_top_k: int = 5,
    sentence_embeddings: Tensor | None = None,
    positive_pairs: tuple[Tensor, Tensor] | None = None,
) -> AnalysisResult:
    """Every token-level metric on every layer of ``states`` (and sentence-level ones if available).

    vocab: id -> token (``tokenizer.convert_ids_to_tokens`` or a list); ``None`` skips the
    functional/content split. functional: lower-case function words, ``None`` = the bundled list.
    special_tokens: ``tokenizer.all_special_tokens``; ``None`` = tokens shaped like ``[XXX]``/``<xxx>``.
    Anisotropy uses seeds ``seed, ..., seed + anisotropy_seeds - 1`` (mean and std reported).
    sentence_embeddings: pooled (n, dim); defaults to ``states.pooled`` when present.
    """
    offsets = states.offsets
    n_sent = int(offsets.numel() - 1)
    seeds = list(range(seed, seed + anisotropy_seeds))
    sample_rows = _anisotropy_rows(offsets, anisotropy_samples, seeds)
    index = tm.occurrence_index(states.token_ids, states.sentence_index, min_count=min_count)
    kinds = _kinds(index, vocab, functional, special_tokens)
    is_fun, is_con = kinds == FUNCTIONAL, kinds == CONTENT
    bucket = tm.frequency_buckets(index.counts, frequency_edges)
    n_buckets = len(frequency_edges)

    out: dict[str, Any] = {k: [] for k in _PER_LAYER}
    for x in states.layers:
        m = tm.layer_token_metrics(
            x, sentence_index=states.sentence_index, n_sentences=n_sent, index=index, sample_rows=sample_rows
        )
        a, s_mean, i_mean = (
            float(m.anisotropy.mean()),
            _mean(m.self_similarity),
            float(m.intra_similarity.nanmean()),
        )
        out["anisotropy"].append(a)
        out["anisotropy_std"].append(float(m.anisotropy.std(unbiased=False)))
        out["self_similarity"].append(s_mean)
        out["adjusted_self_similarity"].append(s_mean - a)
        out["intra_similarity"].append(i_mean)
        out["adjusted_intra_similarity"].append(i_mean - a)
        out["norm_mean"].append(float(m.norms.mean()))
        out["norm_std"].append(float(m.norms.std(unbiased=False)))
        out["functional_self_similarity"].append(tm.masked_mean(m.self_similarity, is_fun))
        out["content_self_similarity"].append(tm.masked_mean(m.self_similarity, is_con))
        out["frequency_self_similarity"].append(
            [tm.masked_mean(m.self_similarity, bucket == b) for b in range(n_buckets)]
        )
        for name, shares in (("rogue", m.rogue_shares), ("token_rogue", m.token_rogue_shares)):
            dims, values = tm.top_dimensions(shares, rogue_top_k)
            out[f"{name}_dims"].append(dims)
            out[f"{name}_shares"].append(values)
        out["token_self_similarity"].append(_floats(m.self_similarity))

    pooled = sentence_embeddings if sentence_embeddings is not None else getattr(states, "pooled", None)
    sentence = None
    if pooled is not None and pooled.shape[0] >= 2:
        sentence = analyze_sentence_embeddings(pooled, positive_pairs=positive_pairs)
    return AnalysisResult(
        n_sentences=n_sent,
        n_tokens=int(states.token_ids.numel()),
        n_layers=len(states.layers),
        dim=int(states.layers[0].shape[1]),
        min_count=min_count,
        anisotropy_samples=int(sample_rows[0].numel()),
        seeds=seeds,
        n_functional_tokens=int(is_fun.sum()),
        n_content_tokens=int(is_con.sum()),
        frequency_edges=[int(e) for e in frequency_edges],
        frequency_bucket_sizes=[int((bucket == b).sum()) for b in range(n_buckets)],
        token_ids=[int(i) for i in index.token_ids.tolist()],
        token_counts=[int(c) for c in index.counts.tolist()],
        token_contexts=[int(c) for c in index.n_contexts.tolist()],
        token_kinds=[KIND_NAMES[int(k)] for k in kinds.tolist()],
        sentence=sentence,
        **out,
    )


_PER_LAYER = (
    "anisotropy",
    "anisotropy_std",
    "self_similarity",
    "adjusted_self_similarity",
    "intra_similarity",
    "adjusted_intra_similarity",
    "norm_mean",
    "norm_std",
    "functional_self_similarity",
    "content_self_similarity",
    "frequency_self_similarity",
    "rogue_dims",
    "rogue_shares",
    "token_rogue_dims",
    "token_rogue_shares",
    "token_self_similarity",
)


def encode_pairs(
    encoder: Encoder, xs: Sequence[str], ys: Sequence[str], *, batch_size: int = 128
) -> tuple[Tensor, Tensor]:
    """Embeddings of the pairs (xs[i], ys[i]): every distinct sentence encoded once, in one call."""
    uniq = list(dict.fromkeys([*xs, *ys]))
    emb = torch.from_numpy(encoder.encode(uniq, batch_size=batch_size))
    row = {s: i for i, s in enumerate(uniq)}
    return emb[[row[s] for s in xs]], emb[[row[s] for s in ys]]


# ---------------------------------------------------------------- cheap probe
def dynamics_probe(
    states: TokenStates | None = None,
    *,
    pooled: Tensor | None = None,
    positive_pairs: tuple[Tensor, Tensor] | None = None,
    vocab: IdToToken | None = None,
    functional: Collection[str] | None = None,
    special_tokens: Collection[str] | None = None,
    layer: int = -1,
    seed: int = 0,
    anisotropy_samples: int = 1000,
    min_count: int = 5,
) -> dict[str, float]:
    """A few geometry numbers for a training-dynamics callback, keys ``"geometry/<name>"``.

    From ``states`` (one layer, default the last): anisotropy, norm_mean, intra_similarity,
    adjusted_intra_similarity, self_similarity, and with a vocab functional_/content_self_similarity.
    From ``pooled`` (default ``states.pooled``): uniformity, average_cosine, and alignment when
    ``positive_pairs`` = (x, y) is given. Well under a second for 1,000 sentences.
    """
    out: dict[str, float] = {}
    if states is not None:
        gen = torch.Generator().manual_seed(seed)
        rows = tm.sample_one_token_per_sentence(states.offsets, n_samples=anisotropy_samples, generator=gen)
        index = tm.occurrence_index(states.token_ids, states.sentence_index, min_count=min_count)
        n_sent = int(states.offsets.numel() - 1)
        m = tm.layer_token_metrics(
            states.layers[layer],
            sentence_index=states.sentence_index,
            n_sentences=n_sent,
            index=index,
            sample_rows=[rows],
        )
        ani, intra, selfsim = float(m.anisotropy[0]), float(m.intra_similarity.nanmean()), m.self_similarity
        out["geometry/anisotropy"] = ani
        out["geometry/norm_mean"] = float(m.norms.mean())
        out["geometry/intra_similarity"] = intra
        out["geometry/adjusted_intra_similarity"] = intra - ani
        out["geometry/self_similarity"] = _mean(selfsim)
        if vocab is not None:
            kinds = _kinds(index, vocab, functional, special_tokens)
            out["geometry/functional_self_similarity"] = tm.masked_mean(selfsim, kinds == FUNCTIONAL)
            out["geometry/content_self_similarity"] = tm.masked_mean(selfsim, kinds == CONTENT)
        if pooled is None:
            pooled = getattr(states, "pooled", None)
    if pooled is not None and pooled.shape[0] >= 2:
        emb = pooled.detach().float()
        out["geometry/uniformity"] = float(sm.uniformity(emb))
        out["geometry/average_cosine"] = sm.average_cosine(emb)
    if positive_pairs is not None and positive_pairs[0].shape[0] > 0:
        x_pos, y_pos = positive_pairs
        out["geometry/alignment"] = float(sm.alignment(x_pos.detach().float(), y_pos.detach().float()))
    return out
