"""Grid sweeps: expand a grid over a run config, run each cell as a resumable subprocess, collect the results.

A sweep file is a run config (the sections of ``configs/quickstart-cpu.yaml``, or ``base: recipe.yaml``
with sections merged over it) plus::

    grid:                               # the cartesian product of these axes
      loss.temperature: [0.01, 0.05]    # a dotted RunConfig key (loss.<p> = loss.params.<p>)
      pooling:                          # a bundle axis: each value sets several keys at once
        - {label: cls-mlp, model.pooler: cls, model.head: linear_tanh}
        - {label: mean, model.pooler: mean, model.head: none}
      train.seed: [1, 2, 3]             # seed axes: averaged over in the group table
    output_dir: runs/sweeps/demo
    sweep: {max_retries: 1, jobs: 1, final_tasks: all}

Layout: ``<output_dir>/sweep.json`` (the resolved sweep), ``cells/<name>/`` (one run folder per cell:
``cell.yaml`` the resolved config it runs, ``cell.json`` its grid values and attempts, ``train.log``, the
trainer's files, and ``DONE`` written atomically when finished), ``summary/`` (tables and overlay plots).

Each cell runs ``python -m csrl train cells/<name>/cell.yaml`` in a subprocess. Running the sweep again
skips cells with ``DONE``, resumes a started cell from its last checkpoint (``--resume``), and retries a
crashed cell up to ``max_retries`` times; user errors (exit 2) and non-finite losses (exit 3) are not
retried. A cell whose stored config differs from the sweep's is refused rather than mixed.

``final_tasks``: ``all`` keeps the trainer's 7-task STS test table (about 100 s per cell for MiniLM on 2
CPU cores, often more than the training of a CPU-sized cell); ``stsb`` turns the trainer's final table off
and scores the best checkpoint on STS-B test only (a few seconds), so a grid can be ranked on STS-B
dev (best) and test cheaply and the 7-task table run later on the cells that matter; ``none`` keeps only
STS-B dev.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from csrl.errors import CsrlError
from csrl.report import tables
from csrl.report.dynamics import DEV_KEY, Records, dynamics_figures, png_bytes, read_metrics, series
from csrl.train.config import RunConfig, _build, build_config, read_yaml
from csrl.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

SEED_KEYS = ("train.seed",)
RUN_SECTIONS = ("model", "data", "loss", "train")
SWEEP_KEYS = ("base", "grid", "sweep", "output_dir", *RUN_SECTIONS)
FINAL_TASKS = ("all", "stsb", "none")
PERMANENT_EXIT_CODES = (2, 3)  # CsrlError (a user mistake), NonFiniteError: retrying gives the same result
TASK_ORDER = ("STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg")
DONE = "DONE"


@dataclass(frozen=True)
class SweepSettings:
    """The ``sweep:`` section."""

    max_retries: int = 1  # re-runs of a crashed cell per invocation (resumed from its last checkpoint)
    jobs: int = 1  # cells run at once (2 CPU cores: keep 1)
    threads: int | None = None  # torch threads per cell (None: torch's default; cpu_count // jobs when jobs > 1)
    final_tasks: str = "all"  # all (trainer's 7-task table) | stsb (STS-B test only, scored by the sweep) | none
    eval_before: bool = False  # the trainer's STS table of the untrained model, in every cell
    timeout_s: float | None = None  # wall-clock limit of one attempt (then it counts as a crash)
    prune_checkpoints: bool = True  # delete a finished cell's resumable checkpoints (best/ is kept)


@dataclass(frozen=True)
class Axis:
    """One grid axis: a dotted key with scalar values, or a named bundle of overrides per value."""

    name: str
    labels: tuple[str, ...]
    overrides: tuple[dict[str, Any], ...]  # per value: dotted key -> value

    @property
    def is_seed(self) -> bool:
        return self.name in SEED_KEYS


@dataclass(frozen=True)
class Cell:
    name: str
    values: dict[str, str]  # axis name -> value label
    overrides: dict[str, Any]  # dotted key -> value
    config: RunConfig

    @property
    def dir(self) -> Path:
        return Path(self.config.output_dir)


@dataclass
class Sweep:
    source: Path | None
    output_dir: Path
    base: dict[str, Any]  # raw run config the grid is applied to
    axes: list[Axis]
    settings: SweepSettings
    cells: list[Cell] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": None if self.source is None else str(self.source),
            "output_dir": str(self.output_dir),
            "settings": dataclasses.asdict(self.settings),
            "axes": [{"name": a.name, "labels": list(a.labels), "seed": a.is_seed} for a in self.axes],
            "base": self.base,
            "cells": [{"name": c.name, "values": c.values, "overrides": c.overrides} for c in self.cells],
        }


# ----------------------------------------------------------------------------- loading and expansion
def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``, section by section; a loss of another name replaces the section."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        old = out.get(k)
        other_loss = k == "loss" and isinstance(v, Mapping) and isinstance(old, dict) and "name" in v
        if other_loss and v["name"] != old.get("name"):  # type: ignore[union-attr]
            out[k] = copy.deepcopy(dict(v))  # the base loss's parameters do not apply to another loss
        elif isinstance(v, Mapping) and isinstance(old, dict):
            out[k] = _deep_merge(old, v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """``raw[a][b] = value`` for ``key = "a.b"``; ``loss.<p>`` means ``loss.params.<p>`` (as ``--set``)."""
    path = key.split(".")
    if not all(path):
        raise CsrlError(f"sweep grid key {key!r} is not a dotted config key", hint="e.g. loss.temperature, train.seed")
    if path[0] == "loss" and len(path) == 2 and path[1] not in ("name", "params"):
        path = ["loss", "params", path[1]]
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise CsrlError(f"sweep grid key {key!r}: {part!r} is not a section")
    node[path[-1]] = copy.deepcopy(value)


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "+".join(_label(v) for v in value)
    return str(value)


def parse_axes(grid: Any) -> list[Axis]:
    """One grid mapping as axes (in file order)."""
    if not isinstance(grid, Mapping) or not grid:
        raise CsrlError("a sweep needs a non-empty `grid:` mapping of dotted keys to value lists",
                        hint="e.g. grid: {loss.temperature: [0.01, 0.05], train.seed: [1, 2, 3]}")  # fmt: skip
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise CsrlError(f"sweep grid {key!r}: expected a non-empty list of values, got {values!r}")
        if str(key) == "output_dir":
            raise CsrlError("sweep grid: output_dir is set per cell by the sweep and cannot be a grid axis")
        if all(isinstance(v, Mapping) for v in values):  # a bundle axis
            labels, overrides = [], []
            for k, v in enumerate(values):
                ov = {str(a): b for a, b in v.items() if a != "label"}
                if not ov:
                    raise CsrlError(f"sweep grid {key!r}, value {k + 1}: a bundle needs at least one dotted key")
                labels.append(str(v.get("label", ",".join(_label(b) for b in ov.values()))))
                overrides.append(ov)
            axes.append(Axis(str(key), tuple(labels), tuple(overrides)))
        elif any(isinstance(v, Mapping) for v in values):
            raise CsrlError(f"sweep grid {key!r}: mix of mappings and plain values",
                            hint="a bundle axis lists mappings only; a key axis lists plain values")  # fmt: skip
        else:
            axes.append(Axis(str(key), tuple(_label(v) for v in values), tuple({str(key): v} for v in values)))
        if len(set(axes[-1].labels)) != len(axes[-1].labels):
            raise CsrlError(f"sweep grid {key!r}: repeated values {list(axes[-1].labels)}")
    return axes


def parse_grid(grid: Any) -> list[list[Axis]]:
    """``grid:`` as sub-grids: one mapping, or a list of mappings whose cartesian products are joined
    (e.g. three one-parameter sweeps around the same base, as paper B's component study)."""
    if isinstance(grid, list):
        if not grid:
            raise CsrlError("sweep grid: an empty list")
        return [parse_axes(g) for g in grid]
    return [parse_axes(grid)]


def _base_label(base: Mapping[str, Any], axis: Axis) -> str:
    """The label of the base config's value on an axis a sub-grid leaves alone."""
    if len(axis.overrides[0]) != 1 or axis.name not in axis.overrides[0]:
        return "base"
    path = axis.name.split(".")
    if path[0] == "loss" and len(path) == 2 and path[1] not in ("name", "params"):
        path = ["loss", "params", path[1]]
    node: Any = base
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return "default"
        node = node[part]
    return _label(node)


def union_axes(base: Mapping[str, Any], subgrids: Sequence[Sequence[Axis]]) -> list[Axis]:
    """Every axis of every sub-grid, with the labels it takes anywhere (base values included), in order."""
    by_name: dict[str, list[str]] = {}
    for sub in subgrids:
        for a in sub:
            by_name.setdefault(a.name, []).extend(a.labels)
    first = {a.name: a for sub in reversed(subgrids) for a in sub}
    for sub in subgrids:
        names = {a.name for a in sub}
        for name in by_name:
            if name not in names:
                by_name[name].append(_base_label(base, first[name]))
    return [Axis(n, tuple(dict.fromkeys(labels)), ()) for n, labels in by_name.items()]


def _short_names(axes: Sequence[Axis]) -> dict[str, str]:
    last = [a.name.split(".")[-1] for a in axes]
    return {a.name: (s if last.count(s) == 1 else a.name.replace(".", "-")) for a, s in zip(axes, last, strict=True)}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)


def expand(base: Mapping[str, Any], subgrids: Sequence[Sequence[Axis]], output_dir: Path) -> list[Cell]:
    """The cartesian product of each sub-grid over ``base`` (cells of equal values once); every cell's
    config is built and validated, so an unknown key or a bad value fails here, before anything runs."""
    axes = union_axes(base, subgrids)
    short = _short_names(axes)
    defined = {a.name: a for sub in subgrids for a in sub}
    cells: dict[str, Cell] = {}
    for sub in subgrids:
        fill = {n: _base_label(base, a) for n, a in defined.items() if n not in {x.name for x in sub}}
        for combo in itertools.product(*(range(len(a.labels)) for a in sub)):
            raw = copy.deepcopy(dict(base))
            values, overrides = {}, {}
            for axis, k in zip(sub, combo, strict=True):
                values[axis.name] = axis.labels[k]
                for key, v in axis.overrides[k].items():
                    set_dotted(raw, key, v)
                    overrides[key] = v
            values = {a.name: values[a.name] if a.name in values else fill[a.name] for a in axes}
            name = "__".join(_safe(f"{short[a.name]}={values[a.name]}") for a in axes)
            raw["output_dir"] = str(output_dir / "cells" / name)
            try:
                cfg = build_config(raw)
            except CsrlError as exc:
                where = ", ".join(f"{k}={_label(v)}" for k, v in overrides.items())
                raise CsrlError(f"sweep cell ({where}): {exc.message}", hint=exc.hint) from None
            if name in cells and cells[name].config != cfg:
                raise CsrlError(f"sweep grid: two different configs map to cell {name!r}",
                                hint="give bundle values distinct labels")  # fmt: skip
            cells.setdefault(name, Cell(name, values, overrides, cfg))
    return list(cells.values())


def load_sweep(path: Path | str, *, output_dir: Path | str | None = None) -> Sweep:
    """Read, merge, expand and validate a sweep file (nothing is run or written)."""
    path = Path(path)
    spec = read_yaml(path)
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise CsrlError(f"{path}: unknown sweep key(s) {', '.join(map(repr, unknown))}",
                        hint=f"valid keys: {', '.join(SWEEP_KEYS)}")  # fmt: skip
    base: dict[str, Any] = {}
    if spec.get("base") is not None:
        ref = Path(str(spec["base"])).expanduser()
        candidates = [ref] if ref.is_absolute() else [path.parent / ref, ref]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise CsrlError(f"{path}: base config {ref} not found (looked in {', '.join(map(str, candidates))})")
        base = {k: v for k, v in read_yaml(found).items() if k != "output_dir"}
    base = _deep_merge(base, {k: spec[k] for k in RUN_SECTIONS if k in spec})
    raw_settings = spec.get("sweep") or {}
    if not isinstance(raw_settings, Mapping):
        raise CsrlError(f"{path}: `sweep:` must be a mapping of settings")
    settings: SweepSettings = _build(SweepSettings, raw_settings, "sweep.")
    check_settings(settings)
    default_out = spec.get("output_dir") or f"runs/sweeps/{path.stem}"
    out = Path(output_dir if output_dir is not None else str(default_out)).expanduser().absolute()
    if "grid" not in spec:
        raise CsrlError(f"{path}: a sweep needs a `grid:`", hint="e.g. grid: {loss.temperature: [0.01, 0.05]}")
    subgrids = parse_grid(spec["grid"])
    if settings.final_tasks != "all":
        set_dotted(base, "train.final_eval", False)  # the sweep scores STS-B itself (module docstring)
    cells = expand(base, subgrids, out)
    return Sweep(path, out, base, union_axes(base, subgrids), settings, cells)


def check_settings(s: SweepSettings) -> None:
    if s.final_tasks not in FINAL_TASKS:
        raise CsrlError(f"sweep.final_tasks must be one of {', '.join(FINAL_TASKS)}, got {s.final_tasks!r}")
    if s.jobs < 1 or s.max_retries < 0:
        raise CsrlError("sweep.jobs must be >= 1 and sweep.max_retries >= 0")
    if s.threads is not None and s.threads < 1:
        raise CsrlError(f"sweep.threads must be >= 1, got {s.threads}")


# ----------------------------------------------------------------------------- running
def _comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k != "output_dir"}


def prepare_cell(cell: Cell) -> None:
    """Write ``cell.yaml`` and ``cell.json``; refuse a folder that holds a run of another config."""
    d = cell.dir
    meta_path = d / "cell.json"
    cfg = cell.config.to_dict()
    meta: dict[str, Any] = {"name": cell.name, "values": cell.values, "overrides": cell.overrides, "attempts": []}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        old = meta.get("config", {})
        if _comparable(old) != _comparable(cfg):
            changed = sorted(
                f"{s}.{k}" for s in RUN_SECTIONS for k in set(old.get(s, {})) | set(cfg.get(s, {}))
                if old.get(s, {}).get(k) != cfg.get(s, {}).get(k)
            )  # fmt: skip
            raise CsrlError(
                f"cell {d} was started with another config (changed: {', '.join(changed) or 'unknown'})",
                hint="use a new output_dir for the new sweep, or delete that cell folder to rerun it",
            )
    meta["config"] = cfg
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "cell.yaml", yaml.safe_dump(cfg, sort_keys=False))
    atomic_write_json(d / "cell.json", meta)


def cell_state(cell_dir: Path) -> str:
    """done | partial (a checkpoint to resume from) | started | new."""
    from csrl.train.checkpoint import latest_checkpoint

    if (cell_dir / DONE).exists():
        return "done"
    if latest_checkpoint(cell_dir / "checkpoints") is not None:
        return "partial"
    return "started" if (cell_dir / "cell.json").exists() else "new"


def train_command(cell: Cell, settings: SweepSettings, *, python: Sequence[str], data_dir: Path | None,
                  threads: int | None, resume: bool) -> list[str]:  # fmt: skip
    cmd = [*python, "-m", "csrl", "train"]
    cmd += ["--resume", str(cell.dir)] if resume else [str(cell.dir / "cell.yaml")]
    if not settings.eval_before:
        cmd.append("--no-before")
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if threads:
        cmd += ["--threads", str(threads)]
    return cmd


_EVAL_LOCK = threading.Lock()


def score_stsb(cell: Cell, data_dir: Path | None) -> Path:
    """STS-B test Spearman of the cell's best model -> ``results/sts_stsb.json`` (STSResults JSON)."""
    from csrl.data.sts import load_sts_task
    from csrl.evaluate.sts import evaluate_sts
    from csrl.models.encoder import Encoder
    from csrl.train.loop import pooler_override

    t = cell.config.train
    with _EVAL_LOCK:
        enc = Encoder.from_pretrained(model=str(cell.dir / "best"))
        task = load_sts_task("stsb", data_dir, split="test")
        with pooler_override(enc, t.final_eval_pooler):
            res = evaluate_sts(lambda s: enc.encode(s, batch_size=t.eval_batch_size), [task])
    out = cell.dir / "results" / "sts_stsb.json"
    atomic_write_text(out, res.to_json())
    return out


def run_cell(
    cell: Cell,
    settings: SweepSettings,
    *,
    data_dir: Path | None = None,
    python: Sequence[str] = (sys.executable,),
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> str:
    """Run (or resume, or retry) one cell until it is done; returns skipped | done | failed."""
    if cell_state(cell.dir) == "done":
        return "skipped"
    prepare_cell(cell)
    meta_path = cell.dir / "cell.json"
    t0 = time.perf_counter()
    for attempt in range(settings.max_retries + 1):
        resume = cell_state(cell.dir) == "partial"
        cmd = train_command(cell, settings, python=python, data_dir=data_dir, threads=threads, resume=resume)
        log(f"  {cell.name}: {'resuming' if resume else 'starting'} (attempt {attempt + 1})")
        started = time.perf_counter()
        with (cell.dir / "train.log").open("a", encoding="utf-8") as fh:
            fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {attempt + 1}: {' '.join(cmd)}\n")
            fh.flush()
            try:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=settings.timeout_s).returncode
            except subprocess.TimeoutExpired:
                rc = -9
                fh.write(f"\n=== killed after the {settings.timeout_s} s limit\n")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["attempts"].append({"resume": resume, "exit_code": rc, "seconds": time.perf_counter() - started})
        atomic_write_json(meta_path, meta)
        if rc == 0:
            break
        tail = (cell.dir / "train.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        log(f"  {cell.name}: exit code {rc}: " + " / ".join(tail))
        if rc in PERMANENT_EXIT_CODES:
            return "failed"
    else:
        return "failed"
    if settings.final_tasks == "stsb":
        score_stsb(cell, data_dir)
    atomic_write_json(cell.dir / DONE, {"seconds": time.perf_counter() - t0, "finished": time.time()})
    if settings.prune_checkpoints:
        shutil.rmtree(cell.dir / "checkpoints", ignore_errors=True)
    return "done"


def run_sweep(
    sweep: Sweep,
    *,
    data_dir: Path | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    python: Sequence[str] = (sys.executable,),
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Run every unfinished cell (``jobs`` at a time); returns cell name -> skipped | done | failed."""
    sweep.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(sweep.output_dir / "sweep.json", sweep.to_dict())
    jobs = jobs or sweep.settings.jobs
    threads = threads or sweep.settings.threads or (max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None)
    todo = [c for c in sweep.cells if cell_state(c.dir) != "done"]
    log(f"sweep {sweep.output_dir}: {len(sweep.cells)} cells, {len(sweep.cells) - len(todo)} done, "
        f"{len(todo)} to run ({jobs} at a time)")  # fmt: skip
    status = {c.name: "skipped" for c in sweep.cells if c not in todo}
    counter = itertools.count(1)

    def one(cell: Cell) -> tuple[str, str]:
        k = next(counter)
        t0 = time.perf_counter()
        log(f"[{k}/{len(todo)}] {cell.name}")
        st = run_cell(cell, sweep.settings, data_dir=data_dir, python=python, threads=threads, log=log)
        log(f"[{k}/{len(todo)}] {cell.name}: {st} in {time.perf_counter() - t0:.0f} s")
        return cell.name, st

    if jobs == 1:
        results = [one(c) for c in todo]
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, todo))
    status.update(dict(results))
    return status


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


def read_sts(cell_dir: Path) -> dict[str, float]:
    """The reported STS numbers: the trainer's 7-task table (with Avg), else the sweep's STS-B-only score."""
    full = cell_dir / "results" / "sts_test.json"
    stsb = cell_dir / "results" / "sts_stsb.json"
    if full.is_file():
        reported = json.loads(full.read_text(encoding="utf-8")).get("reported", {})
    elif stsb.is_file():
        reported = json.loads(stsb.read_text(encoding="utf-8")).get("reported", {})
        reported.pop("Avg", None)  # the mean of one task is not the 7-task average
    else:
        return {}
    return {str(k): float(v) for k, v in reported.items()}


def _strict(obj: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v) for v in obj]
    return obj


def collect_cell(cell_dir: Path, name: str, values: dict[str, str]) -> CellResult:
    state = cell_state(cell_dir)
    try:
        records = read_metrics(cell_dir)
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
    done = cell_dir / DONE
    seconds = json.loads(done.read_text()).get("seconds") if done.is_file() else None
    return CellResult(
        name=name,
        values=values,
        state=state,
        sts=read_sts(cell_dir),
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
    spec_path = root / "sweep.json"
    if not spec_path.is_file():
        raise CsrlError(f"{root} is not a sweep folder (no sweep.json)", hint="run `csrl sweep CONFIG` first")
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    cells = [collect_cell(root / "cells" / c["name"], c["name"], c["values"]) for c in spec["cells"]]
    return Collected(spec["axes"], cells)


SUMMARY_GEOMETRY = ("geometry/anisotropy", "geometry/alignment", "geometry/uniformity",
                    "geometry/adjusted_intra_similarity", "geometry/norm_mean")  # fmt: skip
SUMMARY_PARADIGM = ("paradigm/gd_mean", "paradigm/w_hardest", "paradigm/r_mean")


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


def overlay_figures(col: Collected) -> dict[str, Any]:
    """Dynamics of every group on shared axes (mean over seeds, ± std band): ``overlay_<name>``."""
    runs = {}
    for key, cells in col.groups().items():
        logs = [c.records for c in cells if c.records]
        if logs:
            runs[group_label(dict(zip(col.group_axes, key, strict=True)))] = logs
    figs = dynamics_figures(runs) if runs else {}
    return {f"overlay_{k}": v for k, v in figs.items()}


def _as_number(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def ablation_figures(col: Collected) -> dict[str, Any]:
    """Per non-seed axis with >= 2 values: STS-B (test, else dev best) against the axis, ± std over seeds."""
    from csrl.report.dynamics import _colors, _figure

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
        fig, (ax,) = _figure(1, cell=(6.0, 4.2))
        for (lab, pts), color in zip(lines.items(), _colors(len(lines)), strict=True):
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
        figs[f"ablation_{_safe(name)}"] = fig
    return figs


def write_summary(sweep_dir: Path | str, col: Collected | None = None) -> list[Path]:
    """Tables (Markdown, CSV, JSON) and figures into ``<sweep_dir>/summary/``, atomically."""
    root = Path(sweep_dir)
    col = col or collect(root)
    out = root / "summary"
    t = summary_tables(col)
    settings = json.loads((root / "sweep.json").read_text(encoding="utf-8")).get("settings", {})
    md = [
        f"# Sweep {root.name}",
        "",
        f"{sum(c.state == 'done' for c in col.cells)} of {len(col.cells)} cells done. Groups average the cells "
        f"over the seed axis ({', '.join(SEED_KEYS)}): mean ± sample std (ddof 1). STS: Spearman x100, "
        f"STS12-16 aggregate `all`; final tasks: {settings.get('final_tasks', 'all')}. Geometry and paradigm: "
        "last logged value.",
        "",
        "## Groups",
        "",
        t["groups"].markdown(),
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
    atomic_write_json(paths[3], _strict({
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
    "Axis",
    "Cell",
    "CellResult",
    "Collected",
    "Sweep",
    "SweepSettings",
    "Table",
    "cell_state",
    "collect",
    "expand",
    "group_rows",
    "load_sweep",
    "parse_axes",
    "parse_grid",
    "run_cell",
    "run_sweep",
    "set_dotted",
    "summary_tables",
    "write_summary",
]
