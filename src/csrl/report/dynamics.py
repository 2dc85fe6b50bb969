"""Learning-dynamics figures from a run's ``metrics.jsonl`` (matplotlib Agg, no pyplot state).

A run's log holds one JSON object per logged step with namespaced keys (``train/loss``,
``geometry/anisotropy``, ``paradigm/gd_mean``, ``eval/stsb_dev_spearman``, ...). The figures draw every
series that exists and skip the others:

- ``align_uniform.png``: the alignment-uniformity path (uniformity on x, alignment on y, points coloured
  by step; both lower is better, SimCSE Fig. 2);
- ``geometry.png``: anisotropy, token norm, functional vs content self-similarity, intra-sentence
  similarity (raw and adjusted), uniformity, alignment, average cosine (paper A);
- ``training.png``: training loss and STS-B dev Spearman;
- ``paradigm.png``: paper B's GD, W (hardest-negative share), R and the other gradient statistics.

Several runs can be overlaid: ``runs`` maps a label to one or more logs (seeds); with several logs the
line is their mean over the steps they share and the band is ± one sample std. Files are written
atomically (``csrl.utils.io.atomic_write_bytes``).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from csrl.analysis.plots import new_figure
from csrl.analysis.registry import probe_panels
from csrl.errors import CsrlError
from csrl.utils.io import atomic_write_bytes

Records = list[dict[str, Any]]
Runs = Mapping[str, Sequence[Records]]

DEV_KEY = "eval/stsb_dev_spearman"
# (title, [(key, legend label)]) per panel; a panel is drawn when at least one of its keys has data
# The geometry probe's panels come from the metric registry (csrl.analysis.catalogue): a metric declared
# with ``probe=True`` and a ``panel`` is logged during training and plotted here without further edits.
GEOMETRY_PANELS: list[tuple[str, list[tuple[str, str]]]] = probe_panels()
TRAINING_PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("training loss", [("train/loss", "")]),
    ("STS-B dev Spearman x100", [(DEV_KEY, "")]),
]
PARADIGM_TITLES = {
    "paradigm/gd_mean": "GD: gradient dissipation (mean)",
    "paradigm/active_share": "share of active anchors (GD > threshold)",
    "paradigm/w_hardest": "W: hardest-negative share",
    "paradigm/r_mean": "R: pull/push ratio (mean)",
    "paradigm/same_view_share": "W mass on same-view negatives",
    "paradigm/other_share": "gradient share outside the paradigm",
}
ANGLE_KEYS = [
    ("paradigm/pos_angle_deg", "positive"),
    ("paradigm/neg_angle_deg", "negatives"),
    ("paradigm/hardest_neg_angle_deg", "hardest negative"),
]
STYLES = ["-", "--", ":", "-."]


# ----------------------------------------------------------------------------- reading
def read_metrics(path: Path | str) -> Records:
    """The records of ``metrics.jsonl`` (or of a run folder holding one); a line cut by a kill is skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.is_file():
        raise CsrlError(f"no metrics log at {p}", hint="pass a run folder written by `csrl train`")
    out: Records = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int | float):
            out.append(rec)
    return out


def series(records: Records, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of ``key``, by step; the last value wins for a repeated step; non-finite dropped."""
    by_step: dict[int, float] = {}
    for r in records:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v)):
            by_step[int(r["step"])] = float(v)
    steps = sorted(by_step)
    return np.asarray(steps, dtype=np.int64), np.asarray([by_step[s] for s in steps], dtype=np.float64)


def band(logs: Sequence[Records], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and sample std (ddof 1; 0 for a single log) of ``key`` over logs, at the steps all logs share."""
    per = [dict(zip(*(a.tolist() for a in series(r, key)), strict=True)) for r in logs]
    per = [p for p in per if p]
    if not per:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty
    common = sorted(set.intersection(*(set(p) for p in per)))
    vals = np.asarray([[p[s] for s in common] for p in per], dtype=np.float64).reshape(len(per), len(common))
    std = vals.std(axis=0, ddof=1) if len(per) > 1 else np.zeros(len(common))
    return np.asarray(common, dtype=np.int64), vals.mean(axis=0), std


def metric_keys(records: Records, prefix: str = "") -> list[str]:
    """Numeric keys (other than ``step``) starting with ``prefix``, in first-seen order."""
    seen: dict[str, None] = {}
    for r in records:
        for k, v in r.items():
            if k != "step" and k.startswith(prefix) and isinstance(v, int | float) and not isinstance(v, bool):
                seen.setdefault(k, None)
    return list(seen)


def _has(runs: Runs, key: str) -> bool:
    return any(series(r, key)[0].size for logs in runs.values() for r in logs)


# ----------------------------------------------------------------------------- drawing
def line_colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _panel(ax: Axes, runs: Runs, title: str, keys: list[tuple[str, str]], colors: list[Any]) -> None:
    multi = len(runs) > 1
    for (label, logs), color in zip(runs.items(), colors, strict=True):
        for (key, sub), style in zip(keys, STYLES, strict=False):
            steps, mean, std = band(logs, key)
            if not steps.size:
                continue
            name = " ".join(p for p in ((label if multi else ""), sub) if p) or None
            kw: dict[str, Any] = {"color": color} if multi or len(keys) == 1 else {}
            (line,) = ax.plot(steps, mean, style if multi else "-", marker="o", markersize=2.5, label=name, **kw)
            if len(logs) > 1 and np.any(std > 0):
                ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.ticklabel_format(axis="y", useOffset=False)  # R = 1 +- 1e-7 reads as 1, not as "1e-7 + 1"
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0] and (len(keys) > 1 or multi):
        ax.legend(fontsize=7)


def _panels_figure(runs: Runs, panels: list[tuple[str, list[tuple[str, str]]]], suptitle: str) -> Figure | None:
    present = [(t, [k for k in keys if _has(runs, k[0])]) for t, keys in panels]
    present = [(t, keys) for t, keys in present if keys]
    if not present:
        return None
    fig, axes = new_figure(len(present))
    colors = line_colors(len(runs))
    for ax, (title, keys) in zip(axes, present, strict=True):
        _panel(ax, runs, title, keys, colors)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def align_uniform_figure(runs: Runs, suptitle: str = "") -> Figure | None:
    """Uniformity (x) vs alignment (y) over training; one run: points coloured by step; several: one path each."""
    paths = {}
    for label, logs in runs.items():
        su, u, _ = band(logs, "geometry/uniformity")
        sa, a, _ = band(logs, "geometry/alignment")
        common = np.intersect1d(su, sa)
        if common.size:
            paths[label] = (common, u[np.isin(su, common)], a[np.isin(sa, common)])
    if not paths:
        return None
    fig, (ax,) = new_figure(1, cell=(6.0, 4.6))
    if len(paths) == 1:
        steps, u, a = next(iter(paths.values()))
        ax.plot(u, a, "-", color="0.6", linewidth=1, zorder=1)
        sc = ax.scatter(u, a, c=steps, cmap="viridis", norm=Normalize(steps.min(), max(steps.max(), 1)), zorder=2)
        fig.colorbar(sc, ax=ax, label="step")
    else:
        for (label, (steps, u, a)), color in zip(paths.items(), line_colors(len(paths)), strict=True):
            ax.plot(u, a, "-o", color=color, markersize=3, label=label)
            ax.plot(u[-1:], a[-1:], "*", color=color, markersize=11)
        ax.legend(fontsize=7)
    steps, u, a = next(iter(paths.values()))
    ax.annotate(f"step {int(steps[0])}", (u[0], a[0]), fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("uniformity  (log E exp(-2 ||x - y||^2), lower = more uniform)")
    ax.set_ylabel("alignment  (E ||x - x+||^2, lower = closer)")
    ax.set_title(suptitle or "alignment-uniformity path (star: last step)", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def paradigm_figure(runs: Runs, suptitle: str = "") -> Figure | None:
    keys = {k for logs in runs.values() for r in logs for k in metric_keys(r, "paradigm/")}
    panels = [(title, [(k, "")]) for k, title in PARADIGM_TITLES.items() if k in keys]
    angles = [(k, name) for k, name in ANGLE_KEYS if k in keys]
    if angles:
        panels.append(("angles to the anchor (degrees)", angles))
    known = set(PARADIGM_TITLES) | {k for k, _ in ANGLE_KEYS}
    panels += [(k.split("/", 1)[1], [(k, "")]) for k in sorted(keys - known)]
    return _panels_figure(runs, panels, suptitle)


def dynamics_figures(runs: Runs, title: str = "") -> dict[str, Figure]:
    """Every figure that the logs have data for, by file stem."""
    figs = {
        "align_uniform": align_uniform_figure(runs, title),
        "geometry": _panels_figure(runs, GEOMETRY_PANELS, title),
        "training": _panels_figure(runs, TRAINING_PANELS, title),
        "paradigm": paradigm_figure(runs, title),
    }
    return {k: v for k, v in figs.items() if v is not None}


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figures(figs: Mapping[str, Figure], out_dir: Path | str, prefix: str = "") -> list[Path]:
    """Write each figure as ``<out_dir>/<prefix><name>.png``, atomically."""
    out = Path(out_dir)
    paths = []
    for name, fig in figs.items():
        p = out / f"{prefix}{name}.png"
        atomic_write_bytes(p, png_bytes(fig))
        paths.append(p)
    return paths


def plot_run(run_dir: Path | str, out_dir: Path | str | None = None) -> list[Path]:
    """``csrl dynamics``: the figures of one run, into ``out_dir`` (default ``<run_dir>/dynamics``)."""
    run = Path(run_dir)
    records = read_metrics(run)
    if not records:
        raise CsrlError(f"{run}/metrics.jsonl holds no records yet")
    figs = dynamics_figures({run.name: [records]}, title=run.name)
    return save_figures(figs, Path(out_dir) if out_dir is not None else run / "dynamics")


__all__ = [
    "DEV_KEY",
    "align_uniform_figure",
    "band",
    "dynamics_figures",
    "metric_keys",
    "paradigm_figure",
    "plot_run",
    "png_bytes",
    "read_metrics",
    "save_figures",
    "series",
]
