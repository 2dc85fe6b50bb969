"""Checked ``argparse`` types: every numeric and path option of ``csrl`` declares its range beside its definition.

``p.add_argument("--batch-size", type=batch_size, ...)``: a type is a callable that returns the converted
value or raises ``argparse.ArgumentTypeError`` with a message naming the value, the allowed range and what
to do; argparse prefixes the option's name. :class:`CsrlArgumentParser` prints such errors the way the rest
of csrl prints user mistakes (``csrl: error: ...``, then a hint), without a traceback, and exits with code 2.

- numbers: :class:`IntOption` / :class:`FloatOption` (ranges as in the config schema,
  :func:`csrl.utils.checks.value_problem`; floats must be finite);
  ready-made: ``positive_int``, ``nonneg_int``, ``positive_float``, ``batch_size``, ``threads``, ``seed``;
  :class:`IntListOption` for comma-separated integers (``dims``).
- paths: :class:`PathOption` of a kind (see :mod:`csrl.utils.checks`): ``existing_file``, ``existing_dir``,
  ``output_file``, ``output_dir``; ``.named("input file", hint=...)`` gives the same check a label.
  A path option returns the path as a string, ``~`` expanded.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NoReturn

from csrl.utils.checks import DEVICES, PathKind, device_problem, path_problem, range_text, value_problem

MAX_BATCH = 1 << 16  # encoding batch: more rows than this exhausts memory on any current machine
MAX_THREADS = 4096
MAX_SEED = 2**32 - 1  # numpy's seed range


class CsrlArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors read like csrl's other user errors (exit 2, no traceback)."""

    def error(self, message: str) -> NoReturn:
        text, _, hint = message.partition("\n  hint: ")
        sys.stderr.write(f"csrl: error: {text}\n")
        if hint:
            sys.stderr.write(f"  hint: {hint}\n")
        usage = " ".join(self.format_usage().split())
        sys.stderr.write(f"  {usage}\n  ({self.prog} --help lists every option)\n")
        self.exit(2)


def _fail(message: str, hint: str | None = None) -> NoReturn:
    raise argparse.ArgumentTypeError(message if hint is None else f"{message}\n  hint: {hint}")


@dataclass(frozen=True)
class IntOption:
    """An integer in ``[lo, hi]``."""

    lo: int
    hi: int
    name: str = "integer"

    @property
    def __name__(self) -> str:  # argparse names a type by its __name__ in some messages
        return self.name

    def __call__(self, text: str) -> int:
        schema = {"min": self.lo, "max": self.hi}
        try:
            value = int(text.strip())
        except (ValueError, AttributeError):
            _fail(f"{text!r} is not an integer", f"use an integer {range_text(schema)}")
        problem = value_problem(value, schema)
        if problem is not None:
            _fail(f"{value} {problem}")
        return value


@dataclass(frozen=True)
class FloatOption:
    """A finite number: ``lo <= x <= hi``, or ``lo < x`` / ``x < hi`` with ``lo_open`` / ``hi_open``."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    name: str = "number"

    @property
    def __name__(self) -> str:
        return self.name

    def schema(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.lo is not None:
            out["gt" if self.lo_open else "min"] = self.lo
        if self.hi is not None:
            out["lt" if self.hi_open else "max"] = self.hi
        return out

    def __call__(self, text: str) -> float:
        schema = self.schema()
        use = f"use a finite number {range_text(schema)}".rstrip()
        try:
            value = float(text)
        except (ValueError, TypeError):
            _fail(f"{text!r} is not a number", use)
        problem = value_problem(value, schema)
        if problem is not None:
            _fail(f"{text} {problem}")
        return value


@dataclass(frozen=True)
class IntListOption:
    """Comma-separated integers, each in ``[lo, hi]`` (``--dims 64,128,256``); returned sorted, each once."""

    lo: int
    hi: int
    name: str = "integer list"

    @property
    def __name__(self) -> str:
        return self.name

    def __call__(self, text: str) -> tuple[int, ...]:
        item = IntOption(self.lo, self.hi, self.name)
        parts = [t.strip() for t in str(text).split(",")]
        if not any(parts):
            _fail(f"{text!r} is empty", f"use integers {range_text({'min': self.lo, 'max': self.hi})} joined by commas")
        values = []
        for part in parts:
            try:
                values.append(item(part))
            except argparse.ArgumentTypeError as exc:
                _fail(f"in {text!r}: {exc}")
        return tuple(sorted(set(values)))


_KIND_TEXT = {"file": "file", "dir": "folder", "output_file": "output file", "output_dir": "output folder"}


@dataclass(frozen=True)
class PathOption:
    """A path of a kind (``file``, ``dir``: inputs that must exist; ``output_file``, ``output_dir``: created)."""

    kind: PathKind
    what: str = ""
    hint: str | None = None

    @property
    def __name__(self) -> str:
        return self.what or _KIND_TEXT[self.kind]

    def named(self, what: str, *, hint: str | None = None) -> PathOption:
        """The same check with a label for messages (``"input file"``) and an optional hint."""
        return replace(self, what=what, hint=hint if hint is not None else self.hint)

    def __call__(self, text: str) -> str:
        problem = path_problem(text, self.kind)
        if problem is not None:
            what = self.what or _KIND_TEXT[self.kind]
            default = {
                "file": "pass an existing file",
                "dir": "pass an existing folder",
                "output_file": "pass a file path in a writable folder (not a folder)",
                "output_dir": "pass a folder path in a writable place (not a file)",
            }[self.kind]
            message = f"{what} not found: {text}" if problem == "not found" else f"{what} {text} {problem}"
            _fail(message, self.hint or default)
        return str(Path(text).expanduser())


def device(text: str) -> str:
    """A torch device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``)."""
    problem = device_problem(text)
    if problem is not None:
        _fail(f"{text!r} {problem}", f"use one of {DEVICES}, or omit --device")
    return text


positive_int = IntOption(1, 2**63 - 1, "positive integer")
nonneg_int = IntOption(0, 2**63 - 1, "non-negative integer")
positive_float = FloatOption(0.0, lo_open=True, name="positive number")
finite_float = FloatOption(name="number")
batch_size = IntOption(1, MAX_BATCH, "batch size")
threads = IntOption(1, MAX_THREADS, "thread count")
seed = IntOption(0, MAX_SEED, "seed")
MAX_DIM = 1 << 20  # embedding width: no model has more; the model's own width is checked once it is loaded
dims = IntListOption(1, MAX_DIM, "dimension")

existing_file = PathOption("file")
existing_dir = PathOption("dir")
output_file = PathOption("output_file")
output_dir = PathOption("output_dir")

config_file = existing_file.named("config file", hint="see configs/ for ready recipes")
sentence_file = existing_file.named("sentence file", hint="a UTF-8 text file with one sentence per line")
run_dir = existing_dir.named("run folder", hint="pass the output_dir of a csrl train run")
run_output_dir = output_dir.named("run folder")

DATA_DIR_HINT = "point csrl at the data with --data-dir (or CSRL_DATA_DIR=/path/to/data), or run `csrl data fetch`"
data_dir = existing_dir.named("data folder", hint=DATA_DIR_HINT)

__all__ = [
    "CsrlArgumentParser",
    "config_file",
    "FloatOption",
    "IntListOption",
    "IntOption",
    "PathOption",
    "batch_size",
    "data_dir",
    "device",
    "dims",
    "existing_dir",
    "existing_file",
    "finite_float",
    "nonneg_int",
    "output_dir",
    "output_file",
    "positive_float",
    "positive_int",
    "run_dir",
    "run_output_dir",
    "seed",
    "sentence_file",
    "threads",
]
