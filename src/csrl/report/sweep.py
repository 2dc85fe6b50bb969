"""A sweep folder's results: collect finished cells' records into tables and figures (reading only).

Reads what :mod:`csrl.sweep` and the trainer leave in a sweep folder (:mod:`csrl.report.sweep_layout`):
``sweep.json`` (axes and cells), each cell's ``metrics.jsonl``, ``results/sts_test.json`` (the trainer's
7-task table) or ``results/sts_stsb.json`` (the sweep's STS-B score) and ``DONE``. Groups average the cells
over the seed axes. :func:`write_summary` writes ``<sweep>/summary/``: ``results.md``, ``cells.csv``,
``groups.csv``, ``collected.json`` and the ablation and overlay figures.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csrl.errors import CsrlError
from csrl.report import tables
from csrl.report.dynamics import DEV_KEY, Records, dynamics_figures, png_bytes, read_metrics, series
from csrl.report.sweep_layout import DONE, STSB_RESULT, SWEEP_JSON, cell_dir, cell_state, safe_name
from csrl.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, strict_json

TASK_ORDER = ("STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg")


# ----------------------------------------------------------------------------- collection
@dataclass
class CellResult:
    name: str
    values: dict[str, str]
    state: str
    sts: dict[str, float]  # short task name -> Spearman x 100 (and "Avg" with all 7 tasks)
    dev_best: float | None
    best_step: int | None
    steps: int | None
    final: dict[str, float]  # last value of every geometry/ and paradigm/ key, and train/loss
    first: dict[str, float]  # first value of the same keys
    seconds: float | None
    records: Records = field(default_factory=list, repr=False)


def read_sts(path: Path) -> dict[str, float]:
    """The reported STS numbers: the trainer's 7-task table (with Avg), else the sweep's STS-B-only score."""
    full = path / "results" / "sts_test.json"
    stsb = path / STSB_RESULT
    if full.is_file():
        reported = json.loads(full.read_text(encoding="utf-8")).get("reported", {})
    elif stsb.is_file():
        reported = json.loads(stsb.read_text(encoding="utf-8")).get("reported", {})
        reported.pop("Avg", None)  # the mean of one task is not the 7-task average
    else:
        return {}
    return {str(k): float(v) for k, v in reported.items()}


def collect_cell(path: Path, name: str, values: dict[str, str]) -> CellResult:
    """One cell folder's state, STS numbers, STS-B dev (best) and first/final geometry and paradigm values."""
    state = cell_state(path)
    try:
        records = read_metrics(path)
    except CsrlError:
        records = []
    steps, dev = series(records, DEV_KEY)
    best = int(dev.argmax()) if dev.size else None
    keys = {k for r in records for k in r if k.startswith(("geometry/", "paradigm/")) or k == "train/loss"}
    final, first = {}, {}
    for k in sorted(keys):
        s, v = series(records, k)
        if v.size:
            final[k], first[k] = float(v[-1]), float(v[0])
    done = path / DONE
    seconds = json.loads(done.read_text()).get("seconds") if done.is_file() else None
    return CellResult(
        name=name,
        values=values,
        state=state,
        sts=read_sts(path),
        dev_best=None if best is None else float(dev[best]),
        best_step=None if best is None else int(steps[best]),
        steps=max((int(r["step"]) for r in records), default=None),
        final=final,
        first=first,
        seconds=seconds,
        records=records,
    )


@dataclass
class Collected:
    axes: list[dict[str, Any]]  # {"name", "labels", "seed"}
    cells: list[CellResult]
    sweep_dir: Path | None = None  # where it was collected from (figure titles)

    @property
    def group_axes(self) -> list[str]:
        return [a["name"] for a in self.axes if not a["seed"]]

    def groups(self) -> dict[tuple[str, ...], list[CellResult]]:
        """Cells grouped by every non-seed axis (grid order)."""
        out: dict[tuple[str, ...], list[CellResult]] = {}
        for c in self.cells:
            out.setdefault(tuple(c.values[a] for a in self.group_axes), []).append(c)
        return out


def cell_metrics(c: CellResult) -> dict[str, float]:
    """The numbers a cell contributes to the tables: STS, STS-B dev (best), final geometry and paradigm."""
    out: dict[str, float] = {"STS-B dev (best)": math.nan if c.dev_best is None else c.dev_best}
    out.update({f"{k} test" if k == "STS-B" else k: v for k, v in c.sts.items()})
    out.update(c.final)
    return out


def group_rows(col: Collected) -> list[dict[str, Any]]:
    """One row per group: the axis values, n, and (mean, sample std) of every metric over the group's cells."""
    rows = []
    for key, cells in col.groups().items():
        done = [c for c in cells if c.state == "done"]
        metrics = [cell_metrics(c) for c in done]
        names = list(dict.fromkeys(k for m in metrics for k in m))
        stats = {k: tables.mean_std([m.get(k, math.nan) for m in metrics]) for k in names}
        rows.append({"values": dict(zip(col.group_axes, key, strict=True)), "n": len(done), "of": len(cells),
                     "stats": stats})  # fmt: skip
    return rows


def collect(sweep_dir: Path | str) -> Collected:
    """Read every cell of a sweep folder (as listed in its ``sweep.json``)."""
    root = Path(sweep_dir)
    spec_path = root / SWEEP_JSON
    if not spec_path.is_file():
        raise CsrlError(f"{root} is not a sweep folder (no sweep.json)", hint="run `csrl sweep CONFIG` first")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    cells = [collect_cell(cell_dir(root, c["name"]), c["name"], c["values"]) for c in spec["cells"]]
    return Collected(spec["axes"], cells, Path(sweep_dir))


SUMMARY_GEOMETRY = ("geometry/anisotropy", "geometry/alignment", "geometry/uniformity",
                    "geometry/adjusted_intra_similarity", "geometry/norm_mean")  # fmt: skip
SUMMARY_PARADIGM = ("paradigm/gd_mean", "paradigm/w_hardest", "paradigm/r_mean")
CHANGE_GEOMETRY = ("geometry/anisotropy", "geometry/functional_self_similarity", "geometry/content_self_similarity",
                   "geometry/intra_similarity", "geometry/adjusted_intra_similarity", "geometry/norm_mean",
                   "geometry/rogue_shares", "geometry/alignment", "geometry/uniformity")  # fmt: skip
"""Paper A's quantities in the first -> last table (:func:`change_table`)."""


def _short(key: str) -> str:
    return key.split("/", 1)[-1]


def _metric_columns(col: Collected) -> list[str]:
    present = {k for c in col.cells for k in cell_metrics(c)}
    sts = [t if t != "STS-B" else "STS-B test" for t in TASK_ORDER]
    cols = ["STS-B dev (best)"] + [t for t in sts if t in present]
    cols += [k for k in (*SUMMARY_GEOMETRY, *SUMMARY_PARADIGM) if k in present]
    return cols


@dataclass
class Table:
    headers: list[str]
    rows: list[list[tables.Cell]]
    digits: list[int]  # decimals per column

    def markdown(self) -> str:
        return tables.markdown(self.headers, self.rows, digits=self.digits)

    def html(self) -> str:
        return tables.html_table(self.headers, self.rows, digits=self.digits)


def _decimals(key: str) -> int:
    return 3 if key.startswith(("geometry/", "paradigm/")) else 2


def summary_tables(col: Collected) -> dict[str, Table]:
    """``groups`` (mean ± std over seeds, as text) and ``cells`` (one row per cell), for Markdown and HTML."""
    cols = _metric_columns(col)
    g_head = [*col.group_axes, "n"] + [_short(c) for c in cols]
    g_rows: list[list[tables.Cell]] = []
    for g in group_rows(col):
        cells: list[tables.Cell] = [*g["values"].values(), f"{g['n']}/{g['of']}"]
        for key in cols:
            mean, std = g["stats"].get(key, (math.nan, math.nan))
            cells.append(tables.fmt_mean_std(mean, std, digits=_decimals(key)))
        g_rows.append(cells)
    axes = [a["name"] for a in col.axes]
    c_head = ["cell", *axes, "state", "steps", "best step"] + [_short(c) for c in cols] + ["seconds"]
    c_digits = [0] * (4 + len(axes)) + [_decimals(c) for c in cols] + [0]
    c_rows: list[list[tables.Cell]] = []
    for c in col.cells:
        m = cell_metrics(c)
        c_rows.append([c.name, *(c.values[a] for a in axes), c.state, c.steps, c.best_step,
                       *(m.get(k) for k in cols), c.seconds])  # fmt: skip
    return {"groups": Table(g_head, g_rows, [2] * len(g_head)), "cells": Table(c_head, c_rows, c_digits)}


def change_table(col: Collected) -> Table:
    """Per group, the geometry probe's first value (step 0) -> its last, mean ± sample std over the done seeds:
    what training did to each of paper A's quantities (last layer)."""
    keys = [k for k in CHANGE_GEOMETRY if any(k in c.first for c in col.cells)]
    head = [*col.group_axes, "n"] + [f"{_short(k)}: first → last" for k in keys]
    rows: list[list[tables.Cell]] = []
    for key, cells in col.groups().items():
        done = [c for c in cells if c.state == "done"]
        row: list[tables.Cell] = [*key, f"{len(done)}/{len(cells)}"]
        for k in keys:
            f_mean, f_std = tables.mean_std([c.first.get(k, math.nan) for c in done])
            l_mean, l_std = tables.mean_std([c.final.get(k, math.nan) for c in done])
            first = tables.fmt_mean_std(f_mean, f_std, digits=3) if f_std > 5e-4 else tables.fmt(f_mean, 3)
            row.append(f"{first} → {tables.fmt_mean_std(l_mean, l_std, digits=3)}")
        rows.append(row)
    return Table(head, rows, [2] * len(head))


def _csv_tables(col: Collected) -> tuple[str, str]:
    keys = list(dict.fromkeys(k for c in col.cells for k in cell_metrics(c)))
    firsts = list(dict.fromkeys(k for c in col.cells for k in c.first if k.startswith("geometry/")))
    axes = [a["name"] for a in col.axes]
    head = ["cell", *axes, "state", "steps", "best_step", *keys, *(f"{k}@first" for k in firsts), "seconds"]
    rows: list[list[tables.Cell]] = []
    for c in col.cells:
        m = cell_metrics(c)
        rows.append([c.name, *(c.values[a] for a in axes), c.state, c.steps, c.best_step, *(m.get(k) for k in keys),
                     *(c.first.get(k) for k in firsts), c.seconds])  # fmt: skip
    g_head = [*col.group_axes, "n", *(f"{k} {s}" for k in keys for s in ("mean", "std"))]
    g_rows: list[list[tables.Cell]] = []
    for g in group_rows(col):
        stats = [v for k in keys for v in g["stats"].get(k, (math.nan, math.nan))]
        g_rows.append([*g["values"].values(), g["n"], *stats])
    return tables.csv_text(head, rows), tables.csv_text(g_head, g_rows)


def group_label(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in values.items()) or "all cells"


def group_runs(col: Collected) -> dict[str, list[Records]]:
    """Every group's logs (one per seed), by group label: the ``runs`` of the overlay figures."""
    runs = {}
    for key, cells in col.groups().items():
        logs = [c.records for c in cells if c.records]
        if logs:
            runs[group_label(dict(zip(col.group_axes, key, strict=True)))] = logs
    return runs


def overlay_figures(col: Collected) -> dict[str, Any]:
    """Dynamics of every group on shared axes (mean over seeds, ± std band): ``overlay_<name>``."""
    runs = group_runs(col)
    figs = dynamics_figures(runs, sweep_subject(col)) if runs else {}
    return {f"overlay_{k}": v for k, v in figs.items()}


def sweep_subject(col: Collected) -> str:
    """The sweep, its base model and the probed layer, for figure titles."""
    from csrl.report.dynamics import n_probed_layers

    if col.sweep_dir is None:
        return ""
    model = ""
    try:
        spec = json.loads((col.sweep_dir / SWEEP_JSON).read_text(encoding="utf-8"))
        model = str(spec.get("base", {}).get("model", {}).get("model", ""))
    except (OSError, ValueError, AttributeError):
        pass
    n = n_probed_layers({c.name: [c.records] for c in col.cells if c.records})
    layer = f"geometry probe: last layer (L{n - 1})" if n else ""
    return " · ".join(x for x in (col.sweep_dir.name, model, layer) if x)


def _as_number(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def ablation_figures(col: Collected) -> dict[str, Any]:
    """Per non-seed axis with >= 2 values: STS-B (test, else dev best) against the axis, ± std over seeds."""
    from csrl.analysis.plots import new_figure
    from csrl.report.dynamics import line_colors

    rows = group_rows(col)
    metric = "STS-B test" if any("STS-B test" in r["stats"] for r in rows) else "STS-B dev (best)"
    figs: dict[str, Any] = {}
    for axis in col.axes:
        name = axis["name"]
        if axis["seed"] or len(axis["labels"]) < 2:
            continue
        labels = list(axis["labels"])
        nums = [_as_number(v) for v in labels]
        numeric = all(n is not None for n in nums)
        xs = [float(n) for n in nums if n is not None] if numeric else list(range(len(labels)))
        others = [a for a in col.group_axes if a != name]
        lines: dict[str, list[tuple[float, float, float]]] = {}
        for r in rows:
            mean, std = r["stats"].get(metric, (math.nan, math.nan))
            if not math.isfinite(mean):
                continue
            lab = group_label({a: r["values"][a] for a in others})
            lines.setdefault(lab, []).append((xs[labels.index(r["values"][name])], mean, std))
        if not lines:
            continue
        fig, (ax,) = new_figure(1, cell=(6.0, 4.2))
        for (lab, pts), color in zip(lines.items(), line_colors(len(lines)), strict=True):
            pts.sort()
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                        yerr=[0 if not math.isfinite(p[2]) else p[2] for p in pts],
                        marker="o", capsize=3, color=color, label=lab if others else None)  # fmt: skip
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(xs, labels)
        ax.set_xlabel(name)
        ax.set_ylabel(f"{metric} Spearman x100")
        ax.set_title(f"{metric} vs {name} (mean ± std over seeds)", fontsize=10)
        ax.grid(alpha=0.3)
        if others:
            ax.legend(fontsize=7)
        figs[f"ablation_{safe_name(name)}"] = fig
    return figs


def write_summary(sweep_dir: Path | str, col: Collected | None = None) -> list[Path]:
    """Tables (Markdown, CSV, JSON) and figures into ``<sweep_dir>/summary/``, atomically."""
    root = Path(sweep_dir)
    col = col or collect(root)
    out = root / "summary"
    t = summary_tables(col)
    settings = json.loads((root / SWEEP_JSON).read_text(encoding="utf-8")).get("settings", {})
    seed_axes = ", ".join(a["name"] for a in col.axes if a["seed"]) or "none in this grid"
    md = [
        f"# Sweep {root.name}",
        "",
        f"{sum(c.state == 'done' for c in col.cells)} of {len(col.cells)} cells done. Groups average the cells "
        f"over the seed axis ({seed_axes}): mean ± sample std (ddof 1). STS: Spearman x100, "
        f"STS12-16 aggregate `all`; final tasks: {settings.get('final_tasks', 'all')}. Geometry and paradigm: "
        "last logged value.",
        "",
        "## Groups",
        "",
        t["groups"].markdown(),
        "",
        "## Geometry, first probe → last (mean ± std over seeds)",
        "",
        change_table(col).markdown(),
        "",
        "## Cells",
        "",
        t["cells"].markdown(),
        "",
    ]
    cells_csv, groups_csv = _csv_tables(col)
    paths = [out / "results.md", out / "cells.csv", out / "groups.csv", out / "collected.json"]
    atomic_write_text(paths[0], "\n".join(md))
    atomic_write_text(paths[1], cells_csv)
    atomic_write_text(paths[2], groups_csv)
    atomic_write_json(paths[3], strict_json({
        "axes": col.axes,
        "cells": [{k: v for k, v in dataclasses.asdict(c).items() if k != "records"} for c in col.cells],
        "groups": group_rows(col),
    }))  # fmt: skip
    for name, fig in {**ablation_figures(col), **overlay_figures(col)}.items():
        p = out / f"{name}.png"
        atomic_write_bytes(p, png_bytes(fig))
        paths.append(p)
    return paths


__all__ = [
    "CellResult",
    "Collected",
    "Table",
    "ablation_figures",
    "cell_metrics",
    "change_table",
    "collect",
    "collect_cell",
    "group_rows",
    "overlay_figures",
    "read_sts",
    "summary_tables",
    "write_summary",
]
