"""A sweep file: a run config and a grid over it, expanded into validated cells (nothing runs here).

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

``grid:`` may also be a list of such mappings: their cartesian products are joined (cells of equal
values once), e.g. three one-parameter sweeps around the same centre.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csrl.errors import CsrlError
from csrl.report.sweep_layout import cell_dir, safe_name
from csrl.train.config import RunConfig, build_config, build_section, read_recipe, read_yaml
from csrl.utils.dotted import MISSING, dotted_path, get_dotted, set_dotted

__all__ = [
    "FINAL_TASKS",
    "RUN_SECTIONS",
    "SEED_KEYS",
    "Axis",
    "Cell",
    "Sweep",
    "SweepSettings",
    "expand",
    "load_sweep",
    "parse_axes",
    "parse_grid",
    "union_axes",
]

SEED_KEYS = ("train.seed",)
RUN_SECTIONS = ("model", "data", "loss", "train")
SWEEP_KEYS = ("base", "grid", "sweep", "output_dir", *RUN_SECTIONS)
FINAL_TASKS = ("all", "stsb", "none")


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

    def __post_init__(self) -> None:
        if self.final_tasks not in FINAL_TASKS:
            raise CsrlError(f"sweep.final_tasks must be one of {', '.join(FINAL_TASKS)}, got {self.final_tasks!r}")
        if self.jobs < 1 or self.max_retries < 0:
            raise CsrlError("sweep.jobs must be >= 1 and sweep.max_retries >= 0")
        if self.threads is not None and self.threads < 1:
            raise CsrlError(f"sweep.threads must be >= 1, got {self.threads}")


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
        """The content of ``sweep.json`` (what :mod:`csrl.report.sweep` reads back)."""
        return {
            "source": None if self.source is None else str(self.source),
            "output_dir": str(self.output_dir),
            "settings": dataclasses.asdict(self.settings),
            "axes": [{"name": a.name, "labels": list(a.labels), "seed": a.is_seed} for a in self.axes],
            "base": self.base,
            "cells": [{"name": c.name, "values": c.values, "overrides": c.overrides} for c in self.cells],
        }


# ----------------------------------------------------------------------------- parsing
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


def _label(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "+".join(_label(v) for v in value)
    return str(value)


def _checked_key(axis: str, key: str) -> str:
    try:
        dotted_path(key)
    except CsrlError as exc:
        raise CsrlError(f"sweep grid {axis!r}: {exc.message}", hint=exc.hint) from None
    return key


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
                ov = {_checked_key(str(key), str(a)): b for a, b in v.items() if a != "label"}
                if not ov:
                    raise CsrlError(f"sweep grid {key!r}, value {k + 1}: a bundle needs at least one dotted key")
                labels.append(str(v.get("label", ",".join(_label(b) for b in ov.values()))))
                overrides.append(ov)
            axes.append(Axis(str(key), tuple(labels), tuple(overrides)))
        elif any(isinstance(v, Mapping) for v in values):
            raise CsrlError(f"sweep grid {key!r}: mix of mappings and plain values",
                            hint="a bundle axis lists mappings only; a key axis lists plain values")  # fmt: skip
        else:
            name = _checked_key(str(key), str(key))
            axes.append(Axis(name, tuple(_label(v) for v in values), tuple({name: v} for v in values)))
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


# ----------------------------------------------------------------------------- expansion
def _base_label(base: Mapping[str, Any], axis: Axis) -> str:
    """The label of the base config's value on an axis a sub-grid leaves alone."""
    if len(axis.overrides[0]) != 1 or axis.name not in axis.overrides[0]:
        return "base"
    value = get_dotted(base, axis.name)
    return "default" if value is MISSING else _label(value)


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
            values = {axis.name: axis.labels[k] for axis, k in zip(sub, combo, strict=True)}
            overrides = {key: v for axis, k in zip(sub, combo, strict=True) for key, v in axis.overrides[k].items()}
            values = {a.name: values[a.name] if a.name in values else fill[a.name] for a in axes}
            name = "__".join(safe_name(f"{short[a.name]}={values[a.name]}") for a in axes)
            raw = copy.deepcopy(dict(base))
            try:
                for key, v in overrides.items():
                    set_dotted(raw, key, v)
                raw["output_dir"] = str(cell_dir(output_dir, name))
                cfg = build_config(raw)
            except CsrlError as exc:
                where = ", ".join(f"{k}={_label(v)}" for k, v in overrides.items())
                raise CsrlError(f"sweep cell ({where}): {exc.message}", hint=exc.hint) from None
            if name in cells and cells[name].config != cfg:
                raise CsrlError(f"sweep grid: two different configs map to cell {name!r}",
                                hint="give bundle values distinct labels")  # fmt: skip
            cells.setdefault(name, Cell(name, values, overrides, cfg))
    return list(cells.values())


def _read_base(path: Path, ref: Path) -> dict[str, Any]:
    """The ``base:`` recipe (relative to the sweep file, else to the working folder), less its output_dir; a
    recipe with its own ``base:`` is resolved first (:func:`csrl.train.config.read_recipe`)."""
    candidates = [ref] if ref.is_absolute() else [path.parent / ref, ref]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise CsrlError(f"{path}: base config {ref} not found (looked in {', '.join(map(str, candidates))})")
    return {k: v for k, v in read_recipe(found).items() if k != "output_dir"}


def load_sweep(path: Path | str, *, output_dir: Path | str | None = None) -> Sweep:
    """Read, merge, expand and validate a sweep file (nothing is run or written)."""
    path = Path(path)
    spec = read_yaml(path)
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise CsrlError(f"{path}: unknown sweep key(s) {', '.join(map(repr, unknown))}",
                        hint=f"valid keys: {', '.join(SWEEP_KEYS)}")  # fmt: skip
    base = _read_base(path, Path(str(spec["base"])).expanduser()) if spec.get("base") is not None else {}
    base = _deep_merge(base, {k: spec[k] for k in RUN_SECTIONS if k in spec})
    raw_settings = spec.get("sweep") or {}
    if not isinstance(raw_settings, Mapping):
        raise CsrlError(f"{path}: `sweep:` must be a mapping of settings")
    settings = build_section(SweepSettings, raw_settings, "sweep.")
    default_out = spec.get("output_dir") or f"runs/sweeps/{path.stem}"
    out = Path(output_dir if output_dir is not None else str(default_out)).expanduser().absolute()
    if "grid" not in spec:
        raise CsrlError(f"{path}: a sweep needs a `grid:`", hint="e.g. grid: {loss.temperature: [0.01, 0.05]}")
    subgrids = parse_grid(spec["grid"])
    if settings.final_tasks != "all":
        set_dotted(base, "train.final_eval", False)  # the sweep scores STS-B itself (module docstring)
    cells = expand(base, subgrids, out)
    return Sweep(path, out, base, union_axes(base, subgrids), settings, cells)
