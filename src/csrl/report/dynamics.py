"""Learning-dynamics figures from a run's ``metrics.jsonl`` (matplotlib Agg, no pyplot state).

A run's log holds one JSON object per logged step with namespaced keys (``train/loss``,
``geometry/anisotropy``, ``paradigm/gd_mean``, ``eval/stsb_dev_spearman``, ...). The figures draw every
series that exists and skip the others:

- ``align_uniform.png``: the alignment-uniformity path (uniformity on x, alignment on y, points coloured
  by step; both lower is better, SimCSE Fig. 2);
- ``geometry.png``: anisotropy, token norm, functional vs content self-similarity, intra-sentence
  similarity (raw and adjusted), top rogue dimension, uniformity, alignment, average cosine (paper A);
- ``layers.png``: every layer's anisotropy baseline, token norm and top rogue-dimension share (one run);
- ``training.png``: training loss and STS-B dev Spearman;
- ``pretraining.png``: masked-LM loss and accuracy (training batches, held-out) and the learning rate;
- ``paradigm.png``: paper B's GD, W (hardest-negative share), R and the other gradient statistics.

Figures are for papers: every axis says what it measures and in which unit, steps are integers, the
title names the run, its model and the probed layer, and a panel whose values do not vary (a share that is
0 at every step, R = 1 to 1e-6) says "constant" with its value instead of plotting noise on a 1e-6 axis.

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
from typing import Any, cast

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from csrl.analysis.plots import new_figure
from csrl.analysis.registry import panels
from csrl.errors import CsrlError
from csrl.utils.io import atomic_write_bytes

Records = list[dict[str, Any]]
Runs = Mapping[str, Sequence[Records]]

DEV_KEY = "eval/stsb_dev_spearman"
STEP_LABEL = "step (optimizer updates)"
LAYER_PREFIX = "layers/L"
FLAT_RTOL = 1e-4
"""A panel whose values span less than this share of their magnitude is reported as constant, not drawn."""

# (title, [(key, legend label)], y-axis label) per panel; a panel is drawn when at least one of its keys has
# data. The geometry probe's panels come from the metric registry (csrl.analysis.catalogue): a metric
# declared with ``probe=True`` and a ``panel`` is logged during training and plotted here without edits.
PanelSpec = tuple[str, list[tuple[str, str]], str]
GEOMETRY_PANELS: list[PanelSpec] = [
    (p.title, [(m.probe_key, m.legend) for m in p.metrics], p.ylabel) for p in panels(probe=True)
]
TRAINING_PANELS: list[PanelSpec] = [
    ("training loss", [("train/loss", "")], r"loss $\mathcal{L}$"),
    ("STS-B dev Spearman", [(DEV_KEY, "")], r"Spearman $\rho \times 100$"),
    ("learning rate", [("train/lr", "")], r"learning rate $\eta$"),
]
PRETRAIN_PANELS: list[PanelSpec] = [
    ("masked-LM loss", [("mlm/loss", "training batch"), ("mlm/heldout_loss", "held-out")],
     "cross-entropy (nats per masked token)"),
    ("masked-LM accuracy", [("mlm/train_accuracy", "training batch"), ("mlm/accuracy", "held-out")],
     "share of masked tokens predicted"),
    ("learning rate", [("train/lr", "")], r"learning rate $\eta$"),
]  # fmt: skip
PARADIGM_TITLES = {
    "paradigm/gd_mean": ("GD: gradient dissipation (mean)", r"$\mathrm{GD}$ (mean over anchors)"),
    "paradigm/active_share": ("share of active anchors (GD > threshold)", "share of anchors"),
    "paradigm/w_hardest": ("W: hardest-negative share", r"$W_{\max}$ (share of the push)"),
    "paradigm/r_mean": ("R: pull/push ratio (mean)", r"$R$ (mean over anchors)"),
    "paradigm/same_view_share": ("W mass on same-view negatives", r"share of $W$"),
    "paradigm/other_share": ("gradient share outside the paradigm", "share of the gradient norm"),
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


def _flat(values: np.ndarray) -> bool:
    span = float(values.max() - values.min())
    return span <= FLAT_RTOL * max(float(np.abs(values).max()), 1e-12)


def _steps_axis(ax: Axes, nbins: int | None = None) -> None:
    ax.set_xlabel(STEP_LABEL)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=nbins or "auto", integer=True))
    ax.grid(alpha=0.3)


def _say_constant(ax: Axes, title: str, drawn: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
    """A panel whose values do not vary says so (value and span) instead of plotting noise on a tiny axis."""
    lines = []
    for name, steps, values in drawn[:4]:
        span = float(values.max() - values.min())
        lines.append(f"{name + ': ' if name else ''}{float(values.mean()):.6g} (span {span:.1g})")
    n_steps = len({int(x) for _, steps, _ in drawn for x in steps})
    ax.text(0.5, 0.5, f"constant over {n_steps} logged steps\n" + "\n".join(lines), transform=ax.transAxes,
            ha="center", va="center", fontsize=9)  # fmt: skip
    ax.set_yticks([])
    lo = min(int(st.min()) for _, st, _ in drawn)
    hi = max(int(st.max()) for _, st, _ in drawn)
    ax.set_xlim(lo, max(hi, lo + 1))
    ax.set_title(f"{title} (constant)", fontsize=10)
    _steps_axis(ax)


def _panel(ax: Axes, runs: Runs, spec: PanelSpec, colors: list[Any]) -> None:
    title, keys, ylabel = spec
    multi = len(runs) > 1
    drawn: list[tuple[str, np.ndarray, np.ndarray]] = []
    plots: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, str, dict[str, Any], int]] = []
    for (label, logs), color in zip(runs.items(), colors, strict=True):
        for (key, sub), style in zip(keys, STYLES, strict=False):
            steps, mean, std = band(logs, key)
            if not steps.size:
                continue
            name = " ".join(p for p in ((label if multi else ""), sub) if p)
            kw: dict[str, Any] = {"color": color} if multi or len(keys) == 1 else {}
            drawn.append((name, steps, mean))
            plots.append((name, steps, mean, std, style if multi else "-", kw, len(logs)))
    if _flat(np.concatenate([d[2] for d in drawn])):
        _say_constant(ax, title, drawn)
        return
    for name, steps, mean, std, style, kw, n_logs in plots:
        (line,) = ax.plot(steps, mean, style, marker="o", markersize=2.5, label=name or None, **kw)
        if n_logs > 1 and np.any(std > 0):
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=9)
    _steps_axis(ax)
    if "learning rate" in title:  # the lr to its real precision (3e-05 is not 0.00)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0), useMathText=True)
    else:
        ax.ticklabel_format(axis="y", useOffset=False)  # R = 1 +- 1e-3 reads as 1, not as "1e-3 + 1"
    if multi and len(keys) > 1:  # the groups' colours are in the figure's legend; here the line styles
        from matplotlib.lines import Line2D

        styles = [Line2D([], [], color="0.25", linestyle=cast(Any, st), label=sub or key)
                  for (key, sub), st in zip(keys, STYLES, strict=False)]  # fmt: skip
        ax.legend(handles=styles, fontsize=7)
    elif not multi and ax.get_legend_handles_labels()[0] and len(keys) > 1:
        ax.legend(fontsize=7)


def _panels_figure(runs: Runs, panels_: list[PanelSpec], suptitle: str) -> Figure | None:
    present = [(t, [k for k in keys if _has(runs, k[0])], y) for t, keys, y in panels_]
    present = [(t, keys, y) for t, keys, y in present if keys]
    if not present:
        return None
    fig, axes = new_figure(len(present))
    colors = line_colors(len(runs))
    for ax, spec in zip(axes, present, strict=True):
        _panel(ax, runs, spec, colors)
    if len(runs) > 1:  # one legend for the groups, below the panels
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=c, marker="o", markersize=3, label=label)
                   for label, c in zip(runs, colors, strict=True)]  # fmt: skip
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(runs), 5), fontsize=8)
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
        bar = fig.colorbar(sc, ax=ax, label=STEP_LABEL)
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        for (label, (steps, u, a)), color in zip(paths.items(), line_colors(len(paths)), strict=True):
            ax.plot(u, a, "-o", color=color, markersize=3, label=label)
            ax.plot(u[-1:], a[-1:], "*", color=color, markersize=11)
        ax.legend(fontsize=7)
    steps, u, a = next(iter(paths.values()))
    ax.annotate(f"step {int(steps[0])}", (u[0], a[0]), fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel(r"uniformity $\log \mathbb{E}\, e^{-2\Vert f(x) - f(y)\Vert^2}$ (lower = more uniform)")
    ax.set_ylabel(r"alignment $\mathbb{E}\, \Vert f(x) - f(x^+)\Vert^2$ (lower = closer)")
    title = "alignment-uniformity path (star: last step)"
    ax.set_title(f"{suptitle}\n{title}" if suptitle else title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def paradigm_figure(runs: Runs, suptitle: str = "") -> Figure | None:
    keys = {k for logs in runs.values() for r in logs for k in metric_keys(r, "paradigm/")}
    specs: list[PanelSpec] = [(title, [(k, "")], y) for k, (title, y) in PARADIGM_TITLES.items() if k in keys]
    angles = [(k, name) for k, name in ANGLE_KEYS if k in keys]
    if angles:
        specs.append(("angles to the anchor", angles, "angle (degrees)"))
    known = set(PARADIGM_TITLES) | {k for k, _ in ANGLE_KEYS}
    specs += [(k.split("/", 1)[1], [(k, "")], k.split("/", 1)[1]) for k in sorted(keys - known)]
    return _panels_figure(runs, specs, suptitle)


def n_probed_layers(runs: Runs) -> int:
    """Layers (embedding output included) of the per-layer probe (``layers/L<i>/...``); 0 when absent."""
    idx = {int(k[len(LAYER_PREFIX):].split("/", 1)[0]) for logs in runs.values() for recs in logs
           for r in recs for k in r if k.startswith(LAYER_PREFIX)}  # fmt: skip
    return max(idx) + 1 if idx else 0


LAYER_PANELS = [
    ("anisotropy", "anisotropy baseline per layer", r"$b$ (mean cosine)"),
    ("norm_mean", "token norm per layer (distance to the origin)", r"$\Vert h \Vert$ (L2 norm)"),
    ("rogue_top_share", "top rogue dimension per layer", r"$r_{\mathrm{top}}$ (share of the summed cosine)"),
]


def layers_figure(runs: Runs, suptitle: str = "") -> Figure | None:
    """Every layer's anisotropy, token norm and top rogue-dimension share over training (one run: the first
    label, mean over its logs), one line per layer coloured by depth."""
    n = n_probed_layers(runs)
    if not n or not runs:
        return None
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable

    logs = next(iter(runs.values()))
    cmap, norm = colormaps["viridis"], Normalize(0, max(n - 1, 1))
    fig, axes = new_figure(len(LAYER_PANELS))
    for ax, (key, title, ylabel) in zip(axes, LAYER_PANELS, strict=True):
        for i in range(n):
            steps, mean, _ = band(logs, f"{LAYER_PREFIX}{i}/{key}")
            if steps.size:
                ax.plot(steps, mean, "-", marker="o", markersize=2, color=cmap(norm(i)), label=f"L{i}")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        _steps_axis(ax)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=r"layer $\ell$ (0 = embeddings)")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def dynamics_figures(runs: Runs, title: str = "") -> dict[str, Figure]:
    """Every figure that the logs have data for, by file stem."""
    mlm = _has(runs, "mlm/loss")
    figs = {
        "align_uniform": align_uniform_figure(runs, title),
        "geometry": _panels_figure(runs, GEOMETRY_PANELS, title),
        "layers": layers_figure(runs, title) if len(runs) == 1 else None,
        "training": None if mlm else _panels_figure(runs, TRAINING_PANELS, title),
        "pretraining": _panels_figure(runs, PRETRAIN_PANELS, title) if mlm else None,
        "paradigm": paradigm_figure(runs, title),
    }
    return {k: v for k, v in figs.items() if v is not None}


STAGE_METRICS: list[tuple[str, str, str]] = [
    ("geometry/anisotropy", "anisotropy baseline", r"$b$ (mean cosine)"),
    ("geometry/functional_self_similarity", "self-similarity, functional tokens", r"$\mathrm{SelfSim}$ (mean cosine)"),
    ("geometry/content_self_similarity", "self-similarity, content tokens", r"$\mathrm{SelfSim}$ (mean cosine)"),
    ("geometry/intra_similarity", "intra-sentence similarity", r"$\mathrm{IntraSim}$ (mean cosine)"),
    ("geometry/norm_mean", "token norm (distance to the origin)", r"$\Vert h \Vert$ (L2 norm)"),
    ("geometry/rogue_shares", "top rogue dimension", r"$r_{\mathrm{top}}$ (share of the summed cosine)"),
    ("geometry/uniformity", "uniformity (lower = more uniform)", r"$\mathcal{L}_{\mathrm{uniform}}$"),
    ("geometry/alignment", "alignment (lower = closer positives)", r"$\mathcal{L}_{\mathrm{align}}$"),
]  # fmt: skip


def stages_figure(first: Records, then: Runs, *, first_label: str = "masked-LM pretraining",
                  then_label: str = "SimCSE", suptitle: str = "") -> Figure | None:  # fmt: skip
    """The geometry probe over two training stages, side by side on a shared y axis per metric: ``first`` (one
    log, e.g. ``csrl pretrain``) on the left, ``then`` (runs or sweep groups, mean ± std over seeds, e.g. SimCSE
    from that model) on the right, each on its own step axis. Metrics missing from either stage are left out."""
    rows = [m for m in STAGE_METRICS if series(first, m[0])[0].size and _has(then, m[0])]
    if not rows:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n_rows = math.ceil(len(rows) / 2)
    fig = Figure(figsize=(15.0, 3.1 * n_rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    subs: list[Any] = list(np.asarray(fig.subfigures(n_rows, 2), dtype=object).ravel())
    colors = line_colors(len(then))
    for sub, (key, title, ylabel) in zip(subs, rows, strict=False):
        left, right = sub.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.5, 1]})
        steps, values = series(first, key)
        left.plot(steps, values, "-o", color="0.2", markersize=2.5)
        left.set_title(f"{title}: {first_label}", fontsize=9)
        left.set_ylabel(ylabel, fontsize=9)
        for (label, logs), color in zip(then.items(), colors, strict=True):
            st, mean, std = band(logs, key)
            if st.size:
                right.plot(st, mean, "-o", color=color, markersize=2, label=label)
                if len(logs) > 1 and np.any(std > 0):
                    right.fill_between(st, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        right.set_title(then_label, fontsize=9)
        _steps_axis(left)
        _steps_axis(right, nbins=4)  # the narrow panel: fewer ticks, so 3-digit steps do not run together
    for sub in subs[len(rows) :]:
        sub.set_visible(False)  # no dead panel: an odd count leaves the last slot empty, not an empty axis
    handles, labels = subs[0].axes[1].get_legend_handles_labels()
    if len(labels) > 1:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    return fig


def run_subject(run_dir: Path | str, records: Records) -> str:
    """What a run's figures show: the run, its model and the probed layer, for figure titles."""
    run = Path(run_dir)
    model = ""
    try:
        cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
        m = cfg.get("model", {})
        if m.get("model"):
            model = f"{m['model']} ({m.get('pooler', '?')} pooler)"
        elif m.get("layers"):
            start = f", from {m['init_from']}" if m.get("init_from") else ""
            model = f"masked LM {m['layers']} layers x {m.get('hidden', '?')}{start}"
    except (OSError, ValueError, AttributeError):
        pass
    n = n_probed_layers({"": [records]})
    layer = f"geometry probe: last layer (L{n - 1} of L0-L{n - 1})" if n else "geometry probe: last layer"
    return " · ".join(x for x in (run.name, model, layer) if x)


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
    figs = dynamics_figures({run.name: [records]}, title=run_subject(run, records))
    return save_figures(figs, Path(out_dir) if out_dir is not None else run / "dynamics")


__all__ = [
    "DEV_KEY",
    "align_uniform_figure",
    "band",
    "dynamics_figures",
    "layers_figure",
    "n_probed_layers",
    "run_subject",
    "metric_keys",
    "paradigm_figure",
    "plot_run",
    "png_bytes",
    "read_metrics",
    "save_figures",
    "series",
    "stages_figure",
]
