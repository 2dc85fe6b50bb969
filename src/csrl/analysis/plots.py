"""Figures of an :class:`~csrl.analysis.suite.AnalysisResult` (matplotlib, Agg, no pyplot state).

Each function takes one result, or a mapping label -> result to overlay several models or checkpoints,
and an output path whose suffix picks the format (``.png``, ``.pdf``, ``.svg``). Files are written
atomically: a temporary file in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from csrl.analysis.suite import AnalysisResult, SentenceAnalysis

Results = AnalysisResult | Mapping[str, AnalysisResult]


def _as_mapping(results: Results) -> dict[str, AnalysisResult]:
    return {"": results} if isinstance(results, AnalysisResult) else dict(results)


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically (temp file in the same folder + ``os.replace``)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = out.suffix.lstrip(".") or "png"
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return out


def _new_figure(nrows: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
    return fig, axes


def _lines(ax: Axes, results: dict[str, AnalysisResult], series: list[tuple[str, str, str]], title: str) -> None:
    """series: (attribute, legend suffix, line style) per curve, drawn for every result."""
    for label, res in results.items():
        layers = list(range(res.n_layers))
        for attr, suffix, style in series:
            name = " ".join(p for p in (label, suffix) if p) or attr
            ax.plot(layers, getattr(res, attr), style, marker="o", markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.grid(alpha=0.3)
    if len(results) > 1 or len(series) > 1:
        ax.legend(fontsize=7)


def plot_layer_metrics(results: Results, path: str | os.PathLike[str]) -> Path:
    """2x3 panels per layer: anisotropy, self-similarity (raw/adjusted), intra-sentence similarity
    (raw/adjusted), mean token norm, functional vs content self-similarity, rogue-dimension share."""
    res = _as_mapping(results)
    fig, ax = _new_figure(2, 3, (15, 8))
    _lines(ax[0], res, [("anisotropy", "", "-")], "anisotropy baseline")
    _lines(
        ax[1],
        res,
        [("self_similarity", "raw", "-"), ("adjusted_self_similarity", "adjusted", "--")],
        "self-sim",
    )
    _lines(
        ax[2],
        res,
        [("intra_similarity", "raw", "-"), ("adjusted_intra_similarity", "adjusted", "--")],
        "intra-sim",
    )
    _lines(ax[3], res, [("norm_mean", "", "-")], "mean token L2 norm")
    _lines(
        ax[4],
        res,
        [("functional_self_similarity", "functional", "-"), ("content_self_similarity", "content", "--")],
        "self-sim: functional vs content",
    )
    for label, r in res.items():
        top = [shares[0] if shares else float("nan") for shares in r.rogue_shares]
        ax[5].plot(range(r.n_layers), top, marker="o", markersize=3, label=label or "top-1 dim")
    ax[5].set_title("share of the top rogue dimension")
    ax[5].set_xlabel("layer (0 = embeddings)")
    ax[5].grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_frequency_buckets(result: AnalysisResult, path: str | os.PathLike[str]) -> Path:
    """Self-similarity per layer for each token-frequency bucket (one line per bucket)."""
    fig, (ax,) = _new_figure(1, 1, (7, 5))
    edges = result.frequency_edges
    for b, size in enumerate(result.frequency_bucket_sizes):
        if size == 0:
            continue
        hi = f"{edges[b + 1]}" if b + 1 < len(edges) else "inf"
        values = [layer[b] for layer in result.frequency_self_similarity]
        ax.plot(range(result.n_layers), values, marker="o", markersize=3, label=f"[{edges[b]}, {hi}) n={size}")
    ax.set_title("self-similarity by token frequency")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_spectrum(sentences: SentenceAnalysis | Mapping[str, SentenceAnalysis], path: str | os.PathLike[str]) -> Path:
    """Normalised singular values sigma_k / sigma_1 (log scale, floored at 1e-6) of pooled embeddings,
    raw and centred."""
    res = {"": sentences} if isinstance(sentences, SentenceAnalysis) else dict(sentences)
    fig, axes = _new_figure(1, 2, (12, 4.5))
    for ax, attr, title in (
        (axes[0], "singular_values", "singular spectrum"),
        (axes[1], "singular_values_centered", "singular spectrum (centred)"),
    ):
        for label, s in res.items():
            sv: list[float] = getattr(s, attr)
            top = sv[0] if sv and sv[0] > 0 else 1.0
            erank = s.effective_rank if attr == "singular_values" else s.effective_rank_centered
            name = f"{label} (erank {erank:.1f})" if label else f"erank {erank:.1f}"
            # floor at 1e-6 so a numerically null direction (e.g. after LayerNorm) does not squash the curve
            ax.semilogy(range(1, len(sv) + 1), [max(v / top, 1e-6) for v in sv], label=name)
        ax.set_title(title)
        ax.set_xlabel("index k")
        ax.set_ylabel("sigma_k / sigma_1")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def save_all_plots(result: AnalysisResult, out_dir: str | os.PathLike[str], *, fmt: str = "png") -> list[Path]:
    """All figures of one result into ``out_dir``: layers, frequency buckets, and spectrum if present."""
    out = Path(out_dir)
    paths = [
        plot_layer_metrics(result, out / f"layer_metrics.{fmt}"),
        plot_frequency_buckets(result, out / f"self_sim_by_frequency.{fmt}"),
    ]
    if result.sentence is not None:
        paths.append(plot_spectrum(result.sentence, out / f"spectrum.{fmt}"))
    return paths
