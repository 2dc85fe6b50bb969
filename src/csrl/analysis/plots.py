"""Figures of an :class:`~csrl.analysis.suite.AnalysisResult` (matplotlib, Agg, no pyplot state).

Each function takes one result, or a mapping label -> result to overlay several models or checkpoints,
and an output path whose suffix picks the format (``.png``, ``.pdf``, ``.svg``). The per-layer panels
come from the metric registry (every metric with a ``panel``); axes carry the metric's symbol and unit,
and titles name the model, pooler and corpus size recorded in ``result.extra``. Files are written
atomically (``csrl.utils.io.atomic_write_bytes``).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from csrl.analysis.registry import panels
from csrl.analysis.suite import AnalysisResult, SentenceAnalysis
from csrl.utils.io import atomic_write_bytes

Results = AnalysisResult | Mapping[str, AnalysisResult]

LAYER_AXIS = r"layer $\ell$ (0 = embedding output)"
STYLES = ["-", "--", ":", "-."]


def _as_mapping(results: Results) -> dict[str, AnalysisResult]:
    return {"": results} if isinstance(results, AnalysisResult) else dict(results)


def describe(result: AnalysisResult) -> str:
    """``model (pooler), N sentences, T tokens``: what a figure shows, from ``result.extra``."""
    model = result.extra.get("model")
    pooler = result.extra.get("pooler")
    name = f"{model} ({pooler})" if model and pooler else str(model or "")
    corpus = f"{result.n_sentences} sentences, {result.n_tokens} tokens"
    return f"{name}, {corpus}" if name else corpus


def _subject(results: dict[str, AnalysisResult]) -> str:
    if len(results) == 1:
        return describe(next(iter(results.values())))
    return ", ".join(label or describe(r) for label, r in results.items())


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically; the suffix picks the format (default png)."""
    out = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=out.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(out, buf.getvalue())
    return out


def new_figure(n_panels: int, ncols: int = 3, cell: tuple[float, float] = (4.6, 3.2)) -> tuple[Figure, list[Axes]]:
    """A figure of ``n_panels`` axes in rows of ``ncols`` (each ``cell`` inches), drawn off-screen (Agg)."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(cell[0] * ncols, cell[1] * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def _finish(ax: Axes, *, title: str, xlabel: str, ylabel: str, legend: bool) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def plot_layer_metrics(results: Results, path: str | os.PathLike[str]) -> Path:
    """One panel per registered panel (anisotropy, self-similarity by token kind, intra-sentence
    similarity, token norm, top rogue-dimension share, ...), each metric against the layer."""
    from matplotlib import colormaps

    res = _as_mapping(results)
    layer_panels = panels("layer")
    fig, axes = new_figure(len(layer_panels), 3, (5.0, 4.0))
    # several models: one colour per model, one line style per metric of the panel (one model: matplotlib's cycle)
    colors = {label: colormaps["tab10"](i % 10) for i, label in enumerate(res)} if len(res) > 1 else {}
    for ax, panel in zip(axes, layer_panels, strict=True):
        for label, r in res.items():
            for metric, style in zip(panel.metrics, STYLES, strict=False):
                name = " ".join(p for p in (label, metric.legend) if p) or metric.label
                values = [metric.plot_value(v) for v in r.layer_values(metric.key)]
                color = colors.get(label)
                ax.plot(range(r.n_layers), values, style, marker="o", markersize=3, label=name, color=color)
        multi = len(res) > 1 or len(panel.metrics) > 1
        _finish(ax, title=panel.title, xlabel=LAYER_AXIS, ylabel=panel.ylabel, legend=multi)
    fig.suptitle(f"token geometry per layer: {_subject(res)}", fontsize=11)
    return save_figure(fig, path)


def plot_frequency_buckets(result: AnalysisResult, path: str | os.PathLike[str]) -> Path:
    """Self-similarity per layer for each token-frequency bucket (one line per non-empty bucket)."""
    fig, (ax,) = new_figure(1, 1, (7, 5))
    edges = result.frequency_edges
    for b, size in enumerate(result.frequency_bucket_sizes):
        if size == 0:
            continue
        hi = f"{edges[b + 1]}" if b + 1 < len(edges) else r"\infty"
        values = [layer[b] for layer in result.layer_values("frequency_self_similarity")]
        ax.plot(
            range(result.n_layers), values, marker="o", markersize=3, label=f"count in $[{edges[b]}, {hi})$, n={size}"
        )
    _finish(
        ax,
        title=f"self-similarity by token frequency: {describe(result)}",
        xlabel=LAYER_AXIS,
        ylabel=r"$\mathrm{SelfSim}$ (mean cosine)",
        legend=True,
    )
    return save_figure(fig, path)


def plot_spectrum(
    sentences: SentenceAnalysis | Mapping[str, SentenceAnalysis], path: str | os.PathLike[str], *, title: str = ""
) -> Path:
    """Normalised singular values sigma_k / sigma_1 (log scale, floored at 1e-6) of pooled sentence
    embeddings, raw and centred; ``title`` names the model and pooler."""
    res = {"": sentences} if isinstance(sentences, SentenceAnalysis) else dict(sentences)
    fig, axes = new_figure(2, 2, (6, 4.5))
    for ax, centred in zip(axes, (False, True), strict=True):
        for label, s in res.items():
            sv: list[float] = s.singular_values_centered if centred else s.singular_values
            top = sv[0] if sv and sv[0] > 0 else 1.0
            erank = s.effective_rank_centered if centred else s.effective_rank
            name = f"{label} (erank {erank:.1f})" if label else f"erank {erank:.1f}"
            # floor at 1e-6 so a numerically null direction (e.g. after LayerNorm) does not squash the curve
            ax.semilogy(range(1, len(sv) + 1), [max(v / top, 1e-6) for v in sv], label=name)
        _finish(
            ax,
            title="singular spectrum, centred" if centred else "singular spectrum",
            xlabel=r"index $k$",
            ylabel=r"$\sigma_k / \sigma_1$" + (" (centred embeddings)" if centred else ""),
            legend=True,
        )
    fig.suptitle(f"pooled sentence embeddings: {title}" if title else "pooled sentence embeddings", fontsize=11)
    return save_figure(fig, path)


def save_all_plots(result: AnalysisResult, out_dir: str | os.PathLike[str], *, fmt: str = "png") -> list[Path]:
    """All figures of one result into ``out_dir``: layers, frequency buckets, and spectrum if present."""
    out = Path(out_dir)
    paths = [
        plot_layer_metrics(result, out / f"layer_metrics.{fmt}"),
        plot_frequency_buckets(result, out / f"self_sim_by_frequency.{fmt}"),
    ]
    if result.sentence is not None:
        paths.append(plot_spectrum(result.sentence, out / f"spectrum.{fmt}", title=describe(result)))
    return paths
