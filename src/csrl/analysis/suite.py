"""The whole geometry suite over an encoder's token states, and a cheap probe for training dynamics.

``analyze_token_states`` runs every registered per-layer metric (:mod:`csrl.analysis.catalogue`) on every
layer, plus the sentence-level ones when pooled embeddings are given, and returns an
:class:`AnalysisResult` that serialises to JSON. ``dynamics_probe`` computes the metrics registered with
``probe=True`` on one layer for a training callback.

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
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from numpy.typing import NDArray
from torch import Tensor

from csrl.analysis import token_metrics as tm
from csrl.analysis.function_words import CONTENT, FUNCTIONAL, KIND_NAMES, IdToToken, token_kinds
from csrl.analysis.registry import LayerContext, Metric, SentenceContext, metrics
from csrl.analysis.token_metrics import PackedTokenStates
from csrl.utils.io import strict_json

DEFAULT_FREQUENCY_EDGES: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 500, 1000)

# sentences -> embeddings (n, dim); e.g. ``lambda s: encoder.encode(s, batch_size=64)``
EncodeFn = Callable[[Sequence[str]], "Tensor | NDArray[Any]"]


class _MetricAttributes:
    """``obj.<key>`` reads ``obj.values[<key>]`` for the registered metric values."""

    def __getattr__(self, name: str) -> Any:  # called only when normal lookup fails
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or metric {name!r}")


def _nan_for_null(v: Any) -> Any:
    if v is None:
        return float("nan")
    if isinstance(v, list):
        return [_nan_for_null(x) for x in v]
    return v


@dataclass
class SentenceAnalysis(_MetricAttributes):
    """Sentence-level geometry of pooled embeddings (n_sentences, dim).

    values: one entry per sentence-level metric of the registry (``average_cosine``, ``uniformity``,
    ``alignment`` (None without pairs), ``isoscore``, ...), also readable as attributes.
    """

    n_sentences: int
    dim: int
    n_positive_pairs: int
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = strict_json(
            {"n_sentences": self.n_sentences, "dim": self.dim, **self.values, "n_positive_pairs": self.n_positive_pairs}
        )
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SentenceAnalysis:
        fixed = ("n_sentences", "dim", "n_positive_pairs")
        values = {k: v for k, v in data.items() if k not in fixed}
        return cls(
            n_sentences=data["n_sentences"], dim=data["dim"], n_positive_pairs=data["n_positive_pairs"], values=values
        )


@dataclass
class AnalysisResult(_MetricAttributes):
    """Per-layer token geometry (index 0 = embedding output), plus optional sentence geometry.

    values: one list (one entry per layer) per per-layer metric of the registry, readable as attributes
    (``result.anisotropy``, ``result.self_similarity``, ...); in JSON they sit at the top level.
    """

    n_sentences: int
    n_tokens: int
    n_layers: int
    dim: int
    min_count: int
    anisotropy_samples: int
    seeds: list[int]
    n_functional_tokens: int
    n_content_tokens: int
    frequency_edges: list[int]  # bucket b: edges[b] <= count < edges[b+1], last open-ended
    frequency_bucket_sizes: list[int]
    token_ids: list[int]  # qualifying ids, ascending
    token_counts: list[int]  # total occurrences
    token_contexts: list[int]  # containing sentences
    token_kinds: list[str]  # functional | content | other ("other" everywhere without a vocab)
    values: dict[str, list[Any]] = field(default_factory=dict)
    sentence: SentenceAnalysis | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def layer_values(self, key: str) -> list[Any]:
        """The per-layer values of a registered metric."""
        return self.values[key]

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NESTED}
        out.update(self.values)
        out["sentence"] = None if self.sentence is None else self.sentence.to_dict()
        out["extra"] = self.extra
        result: dict[str, Any] = strict_json(out)
        return result

    def to_json(self, indent: int | None = None) -> str:
        """Strict JSON (NaN becomes null)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisResult:
        """Inverse of :meth:`to_dict` (nulls in per-layer lists come back as NaN)."""
        names = {f.name for f in fields(cls)}
        sentence = data.get("sentence")
        plain: dict[str, Any] = {n: data.get(n) for n in names - _NESTED}
        return cls(
            **plain,
            values={k: _nan_for_null(v) for k, v in data.items() if k not in names},
            sentence=None if sentence is None else SentenceAnalysis.from_dict(sentence),
            extra=dict(data.get("extra") or {}),
        )


_NESTED = {"values", "sentence", "extra"}


# ---------------------------------------------------------------- sentence level
def analyze_sentence_embeddings(
    embeddings: Tensor, *, positive_pairs: tuple[Tensor, Tensor] | None = None
) -> SentenceAnalysis:
    """All sentence-level metrics of ``embeddings`` (n, dim); ``positive_pairs`` = (x, y), (m, dim) each."""
    emb = embeddings.detach().float()
    ctx = SentenceContext(emb, positive_pairs)
    return SentenceAnalysis(
        n_sentences=int(emb.shape[0]),
        dim=int(emb.shape[1]),
        n_positive_pairs=0 if positive_pairs is None else int(positive_pairs[0].shape[0]),
        values={m.key: m.compute(ctx) for m in metrics("sentence")},
    )


# ---------------------------------------------------------------- token level
def _anisotropy_rows(offsets: Tensor, n_samples: int, seeds: Sequence[int]) -> list[Tensor]:
    rows = []
    for s in seeds:
        gen = torch.Generator().manual_seed(s)
        rows.append(tm.sample_one_token_per_sentence(offsets, n_samples=n_samples, generator=gen))
    return rows


@dataclass(frozen=True)
class _Corpus:
    """The layer-independent work: qualifying tokens, their kinds and frequency buckets, anisotropy rows."""

    states: PackedTokenStates
    index: tm.OccurrenceIndex
    kinds: Tensor  # (T,) KIND_NAMES codes; all OTHER without a vocabulary
    has_vocab: bool
    bucket: Tensor
    n_buckets: int
    sample_rows: list[Tensor]
    rogue_top_k: int

    @property
    def n_sentences(self) -> int:
        return int(self.states.offsets.numel() - 1)

    def layer(self, x: Tensor) -> LayerContext:
        shared = tm.layer_token_metrics(
            x,
            sentence_index=self.states.sentence_index,
            n_sentences=self.n_sentences,
            index=self.index,
            sample_rows=self.sample_rows,
        )
        return LayerContext(
            x=x,
            shared=shared,
            index=self.index,
            functional=self.kinds == FUNCTIONAL if self.has_vocab else None,
            content=self.kinds == CONTENT if self.has_vocab else None,
            frequency_bucket=self.bucket,
            n_buckets=self.n_buckets,
            rogue_top_k=self.rogue_top_k,
        )


def _corpus(
    states: PackedTokenStates,
    *,
    sample_rows: list[Tensor],
    vocab: IdToToken | None,
    functional: Collection[str] | None,
    special_tokens: Collection[str] | None,
    min_count: int,
    frequency_edges: Sequence[int] = DEFAULT_FREQUENCY_EDGES,
    rogue_top_k: int = 5,
) -> _Corpus:
    index = tm.occurrence_index(states.token_ids, states.sentence_index, min_count=min_count)
    if vocab is None:
        kinds = torch.zeros_like(index.token_ids)
    else:
        kinds = token_kinds(index.token_ids, vocab, functional=functional, special_tokens=special_tokens)
    return _Corpus(
        states=states,
        index=index,
        kinds=kinds,
        has_vocab=vocab is not None,
        bucket=tm.frequency_buckets(index.counts, frequency_edges),
        n_buckets=len(frequency_edges),
        sample_rows=sample_rows,
        rogue_top_k=rogue_top_k,
    )


def analyze_token_states(
    states: PackedTokenStates,
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
    """Every registered per-layer metric on every layer of ``states`` (and the sentence-level ones if available).

    vocab: id -> token (``tokenizer.convert_ids_to_tokens`` or a list); ``None`` skips the
    functional/content split. functional: lower-case function words, ``None`` = the bundled list.
    special_tokens: ``tokenizer.all_special_tokens``; ``None`` = tokens shaped like ``[XXX]``/``<xxx>``.
    Anisotropy uses seeds ``seed, ..., seed + anisotropy_seeds - 1`` (mean and std reported).
    sentence_embeddings: pooled (n, dim); defaults to ``states.pooled`` when present.
    """
    seeds = list(range(seed, seed + anisotropy_seeds))
    corpus = _corpus(
        states,
        sample_rows=_anisotropy_rows(states.offsets, anisotropy_samples, seeds),
        vocab=vocab,
        functional=functional,
        special_tokens=special_tokens,
        min_count=min_count,
        frequency_edges=frequency_edges,
        rogue_top_k=rogue_top_k,
    )
    per_layer = metrics("layer")
    values: dict[str, list[Any]] = {m.key: [] for m in per_layer}
    for x in states.layers:
        ctx = corpus.layer(x)
        for m in per_layer:
            v = m.compute(ctx)
            values[m.key].append(float("nan") if v is None else v)

    pooled = sentence_embeddings if sentence_embeddings is not None else states.pooled
    sentence = None
    if pooled is not None and pooled.shape[0] >= 2:
        sentence = analyze_sentence_embeddings(pooled, positive_pairs=positive_pairs)
    index, kinds = corpus.index, corpus.kinds
    return AnalysisResult(
        n_sentences=corpus.n_sentences,
        n_tokens=int(states.token_ids.numel()),
        n_layers=len(states.layers),
        dim=int(states.layers[0].shape[1]),
        min_count=min_count,
        anisotropy_samples=int(corpus.sample_rows[0].numel()),
        seeds=seeds,
        n_functional_tokens=int((kinds == FUNCTIONAL).sum()),
        n_content_tokens=int((kinds == CONTENT).sum()),
        frequency_edges=[int(e) for e in frequency_edges],
        frequency_bucket_sizes=[int((corpus.bucket == b).sum()) for b in range(corpus.n_buckets)],
        token_ids=[int(i) for i in index.token_ids.tolist()],
        token_counts=[int(c) for c in index.counts.tolist()],
        token_contexts=[int(c) for c in index.n_contexts.tolist()],
        token_kinds=[KIND_NAMES[int(k)] for k in kinds.tolist()],
        values=values,
        sentence=sentence,
    )


def encode_pairs(encode: EncodeFn, xs: Sequence[str], ys: Sequence[str]) -> tuple[Tensor, Tensor]:
    """Embeddings of the pairs (xs[i], ys[i]): every distinct sentence encoded once, in one ``encode`` call.

    encode: sentences -> (n, dim) array or tensor, e.g. ``lambda s: encoder.encode(s, batch_size=128)``.
    """
    uniq = list(dict.fromkeys([*xs, *ys]))
    emb = torch.as_tensor(encode(uniq))
    row = {s: i for i, s in enumerate(uniq)}
    return emb[[row[s] for s in xs]], emb[[row[s] for s in ys]]


# ---------------------------------------------------------------- cheap probe
PER_LAYER_KEYS = ("anisotropy", "norm_mean", "rogue_top_share")


def per_layer_probe(states: PackedTokenStates, rows: Tensor) -> dict[str, float]:
    """Every layer's anisotropy baseline, mean token norm and top rogue-dimension share, on one token draw.

    Keys ``"layers/L<i>/anisotropy"`` (mean off-diagonal cosine of the sampled tokens ``rows``, as the
    ``anisotropy`` metric), ``"layers/L<i>/norm_mean"`` (mean L2 norm of all tokens, as ``norm_mean``) and
    ``"layers/L<i>/rogue_top_share"`` (the largest dimension's share of the sampled tokens' summed pairwise
    cosine, as ``rogue_shares``' first entry). Layer 0 is the embedding output. A few ms per layer for
    1,000 sampled tokens.
    """
    out: dict[str, float] = {}
    for i, x in enumerate(states.layers):
        sample = x[rows]
        out[f"layers/L{i}/anisotropy"] = tm.anisotropy_baseline(x, rows)
        out[f"layers/L{i}/norm_mean"] = float(tm.token_norms(x).mean())
        out[f"layers/L{i}/rogue_top_share"] = float(tm.rogue_dimension_shares(sample).max())
    return out


def _probe_values(ms: Iterable[Metric], ctx: LayerContext | SentenceContext) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in ms:
        v = m.compute(ctx)
        if v is not None:
            out[m.probe_key] = m.plot_value(v)
    return out


def dynamics_probe(
    states: PackedTokenStates | None = None,
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
    per_layer: bool = False,
) -> dict[str, float]:
    """The metrics registered with ``probe=True``, keys ``"geometry/<key>"``, for a training callback.

    per_layer: also :func:`per_layer_probe` of every layer (``"layers/L<i>/<key>"``) on the same token draw.

    From ``states`` (one layer, default the last; one anisotropy sample): the per-layer ones
    (functional/content self-similarity only with a vocab). From ``pooled`` (default ``states.pooled``;
    at least 2 rows) and ``positive_pairs`` = (x, y): the sentence-level ones (alignment only with pairs).
    Well under a second for 1,000 sentences.
    """
    out: dict[str, float] = {}
    if states is not None:
        corpus = _corpus(
            states,
            sample_rows=_anisotropy_rows(states.offsets, anisotropy_samples, [seed]),
            vocab=vocab,
            functional=functional,
            special_tokens=special_tokens,
            min_count=min_count,
        )
        out.update(_probe_values(metrics("layer", probe=True), corpus.layer(states.layers[layer])))
        if per_layer:
            out.update(per_layer_probe(states, corpus.sample_rows[0]))
        if pooled is None:
            pooled = states.pooled
    emb = pooled.detach().float() if pooled is not None and pooled.shape[0] >= 2 else None
    out.update(_probe_values(metrics("sentence", probe=True), SentenceContext(emb, positive_pairs)))
    return out
