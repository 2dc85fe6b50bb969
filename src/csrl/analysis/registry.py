"""Metric registry: every number of the geometry suite declared once, with how to compute and show it.

A metric is a small function registered with :func:`register_metric`, which records its key (the
attribute of :class:`~csrl.analysis.suite.AnalysisResult` or ``SentenceAnalysis``, the JSON key, and
``"geometry/<key>"`` in the training probe), a label with math symbol and unit, whether it is per layer or
sentence level, its column in the per-layer table, its panel in the figures, and whether the training
probe logs it. The suite, the table (:func:`csrl.analysis.tables.layer_table_markdown`), the figures
(:mod:`csrl.analysis.plots`), the probe (:func:`csrl.analysis.suite.dynamics_probe`) and the dynamics report
(:func:`probe_panels`) all iterate over the registry, in registration order.

The built-in metrics live in :mod:`csrl.analysis.catalogue`; adding one there is all it takes.

- ``level="layer"``: ``compute(ctx: LayerContext)`` runs once per layer (index 0 = embedding output) and
  returns a float, or a list for vector values (rogue dimensions, per-token values); the result holds one
  value per layer. ``None`` means "not computable from this input" (e.g. no vocabulary): NaN in the
  result, absent from the probe.
- ``level="sentence"``: ``compute(ctx: SentenceContext)`` runs once on the pooled embeddings; ``None``
  is kept as null (e.g. alignment without positive pairs) and left out of the probe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from torch import Tensor

from csrl.analysis import token_metrics as tm

Level = Literal["layer", "sentence"]
PROBE_PREFIX = "geometry/"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class LayerContext:
    """What a per-layer metric computes from: one layer of one corpus.

    x: (n_tokens, dim) the layer's packed token vectors. shared: the one-pass metrics of
    :func:`~csrl.analysis.token_metrics.layer_token_metrics` (anisotropy samples, per-token
    self-similarity, per-sentence intra-similarity, norms, rogue shares). index: the qualifying tokens
    (T of them) of self-similarity. functional, content: (T,) bool masks of the token kinds (None without a
    vocabulary). frequency_bucket: (T,) bucket of each token's count (-1 below the first edge).
    """

    x: Tensor
    shared: tm.LayerTokenMetrics
    index: tm.OccurrenceIndex
    functional: Tensor | None
    content: Tensor | None
    frequency_bucket: Tensor
    n_buckets: int
    rogue_top_k: int

    @property
    def anisotropy(self) -> float:
        """The anisotropy baseline b of this layer (mean over the row samples)."""
        return float(self.shared.anisotropy.mean())

    @property
    def self_similarity(self) -> float:
        """Mean self-similarity over the qualifying tokens (NaN when there are none)."""
        s = self.shared.self_similarity
        return float(s.mean()) if s.numel() else float("nan")

    @property
    def intra_similarity(self) -> float:
        """Mean intra-sentence similarity over sentences (empty sentences skipped)."""
        return float(self.shared.intra_similarity.nanmean())


@dataclass(frozen=True)
class SentenceContext:
    """What a sentence-level metric computes from. embeddings: (n, dim) float32 pooled embeddings, n >= 2,
    or None (the probe without pooled output). positive_pairs: (x, y), (m, dim) each, m >= 1, or None."""

    embeddings: Tensor | None
    positive_pairs: tuple[Tensor, Tensor] | None


@dataclass(frozen=True)
class Metric:
    """One registered metric (see the module docstring)."""

    key: str  # attribute and JSON key; "geometry/<key>" in the training probe
    compute: Callable[[Any], Any]  # LayerContext or SentenceContext -> value; None = not computable here
    level: Level
    label: str  # words, e.g. "anisotropy baseline"
    symbol: str = ""  # matplotlib mathtext, e.g. r"$b$"
    unit: str = ""  # what the values measure, e.g. "mean cosine"; "" = none worth stating
    column: str | None = None  # header in the per-layer table; None = not in the table
    fmt: str = ".3f"  # format of a table cell
    panel: str | None = None  # title of the figure panel it is drawn in (shared panels overlay); None = not drawn
    legend: str = ""  # its name inside a shared panel
    scalar: Callable[[Any], float] | None = None  # the number drawn for a vector value (e.g. the top share)
    probe: bool = False  # also logged by the training-time probe (last layer / pooled output)
    doc: str = ""  # definition (the compute function's docstring)

    @property
    def probe_key(self) -> str:
        return PROBE_PREFIX + self.key

    @property
    def axis_label(self) -> str:
        """``symbol (unit)``, or the label when there is no symbol."""
        name = self.symbol or self.label
        return f"{name} ({self.unit})" if self.unit else name

    def plot_value(self, value: Any) -> float:
        """The number drawn for one stored value (``scalar`` of it for vector values)."""
        if self.scalar is not None:
            return self.scalar(value)
        return float("nan") if value is None else float(value)


@dataclass(frozen=True)
class Panel:
    """Metrics drawn together in one figure panel."""

    title: str
    metrics: tuple[Metric, ...]

    @property
    def ylabel(self) -> str:
        """The first metric's symbol and the panel's units (the legend names the other curves)."""
        first = self.metrics[0]
        units = ", ".join(dict.fromkeys(m.unit for m in self.metrics if m.unit))
        name = first.symbol or first.label
        return f"{name} ({units})" if units else name


_METRICS: dict[str, Metric] = {}


def register_metric(
    key: str,
    *,
    level: Level = "layer",
    label: str,
    symbol: str = "",
    unit: str = "",
    column: str | None = None,
    fmt: str = ".3f",
    panel: str | None = None,
    legend: str = "",
    scalar: Callable[[Any], float] | None = None,
    probe: bool = False,
) -> Callable[[F], F]:
    """Function decorator: ``@register_metric("anisotropy", label=..., column=..., probe=True)``.

    The decorated function is the metric's ``compute``; its docstring is the metric's definition.
    """

    def deco(fn: F) -> F:
        if key in _METRICS:
            raise ValueError(f"metric {key!r} registered twice")
        _METRICS[key] = Metric(
            key=key,
            compute=fn,
            level=level,
            label=label,
            symbol=symbol,
            unit=unit,
            column=column,
            fmt=fmt,
            panel=panel,
            legend=legend,
            scalar=scalar,
            probe=probe,
            doc=(fn.__doc__ or "").strip(),
        )
        return fn

    return deco


def _ensure_loaded() -> None:
    # Importing the catalogue registers every built-in metric.
    import csrl.analysis.catalogue  # noqa: F401


def metrics(level: Level | None = None, *, probe: bool | None = None) -> list[Metric]:
    """Registered metrics in registration order, optionally of one level / only those the probe logs."""
    _ensure_loaded()
    return [m for m in _METRICS.values() if (level is None or m.level == level) and (probe is None or m.probe == probe)]


def get_metric(key: str) -> Metric:
    _ensure_loaded()
    if key not in _METRICS:
        raise KeyError(f"unknown metric {key!r}; registered: {', '.join(_METRICS)}")
    return _METRICS[key]


def panels(level: Level | None = None, *, probe: bool | None = None) -> list[Panel]:
    """Metrics with a ``panel``, grouped by panel title in order of first appearance."""
    groups: dict[str, list[Metric]] = {}
    for m in metrics(level, probe=probe):
        if m.panel is not None:
            groups.setdefault(m.panel, []).append(m)
    return [Panel(title, tuple(ms)) for title, ms in groups.items()]


def probe_panels() -> list[tuple[str, list[tuple[str, str]]]]:
    """The training probe's panels as ``(title, [(log key, legend)])``, the format of
    ``csrl.report.dynamics.GEOMETRY_PANELS``."""
    return [(p.title, [(m.probe_key, m.legend) for m in p.metrics]) for p in panels(probe=True)]


__all__ = [
    "PROBE_PREFIX",
    "LayerContext",
    "Level",
    "Metric",
    "Panel",
    "SentenceContext",
    "get_metric",
    "metrics",
    "panels",
    "probe_panels",
    "register_metric",
]
