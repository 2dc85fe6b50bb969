"""Small checks shared by the typed config's schema and the CLI's option types.

Each returns what is wrong with a value as a short text (``"not found"``, ``"is a folder, not a file"``),
or None when it is fine; the caller names the setting and raises its own error type
(:class:`~csrl.errors.CsrlError` for the config, ``argparse.ArgumentTypeError`` for an option). Path checks
only stat the file system: nothing is created, read or written.

Path kinds: ``file`` and ``dir`` are inputs (they must exist and be readable); ``output_file`` and
``output_dir`` are outputs (missing is fine, they are created: what must hold is that the path is not the
other kind of thing, that no folder on the way to it is a file, and that the nearest existing folder is
writable). Note that ``root`` passes every permission check (``os.access``), so a read-only location is
only detected for ordinary users, or when the path lies under a file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from csrl.errors import CsrlError

PathKind = Literal["file", "dir", "output_file", "output_dir"]
PATH_KINDS: tuple[PathKind, ...] = ("file", "dir", "output_file", "output_dir")

_DEVICE = re.compile(r"(cpu|mps|meta|(cuda|xpu|hpu|npu)(:\d+)?)")
DEVICES = "cpu, cuda, cuda:N, mps, xpu or xpu:N"


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` (``path`` excluded) that exists on disk."""
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path(path.anchor or ".")


def path_problem(path: str | os.PathLike[str], kind: PathKind) -> str | None:
    """What is wrong with ``path`` for use as ``kind``, or None (see the module docstring)."""
    p = Path(path).expanduser()
    if str(path).strip() == "":
        return "is empty"
    if "\x00" in str(path):
        return "holds a NUL character"
    try:
        exists = p.exists()
    except OSError as exc:  # e.g. a name too long for the file system
        return f"cannot be used ({exc.strerror or exc})"
    if not exists:
        anc = _existing_ancestor(p)
        if not anc.is_dir():
            return f"cannot exist: {anc} is a file, not a folder"
        if kind in ("file", "dir"):
            return "not found"
        if not os.access(anc, os.W_OK | os.X_OK):
            return f"cannot be created: the folder {anc} is not writable"
        return None
    if kind in ("file", "output_file") and p.is_dir():
        return "is a folder, not a file"
    if kind in ("dir", "output_dir") and not p.is_dir():
        return "is a file, not a folder"
    if kind == "file" and not os.access(p, os.R_OK):
        return "is not readable"
    if kind == "dir" and not os.access(p, os.R_OK | os.X_OK):
        return "is not readable"
    if kind == "output_dir" and not os.access(p, os.W_OK | os.X_OK):
        return "is not writable"
    if kind == "output_file" and not (os.access(p, os.W_OK) and os.access(p.parent, os.W_OK | os.X_OK)):
        return "is not writable"
    return None


SCHEMA_KEYS = frozenset({
    "min", "max", "gt", "lt", "choices", "allow_zero_as_off", "allow_nonfinite", "path", "relative_to", "check", "help",
})  # fmt: skip
"""What a setting's schema (dataclass field metadata) may declare:

- ``min`` / ``max``: inclusive bounds; ``gt`` / ``lt``: exclusive bounds (numbers; each element of a tuple);
- ``allow_zero_as_off``: 0 is accepted besides the range, meaning "off";
- ``allow_nonfinite``: NaN and infinities are accepted (floats refuse them otherwise, range or not);
- ``choices``: the accepted values;
- ``path``: a :data:`PathKind`; output kinds are checked with the config, input kinds where they are
  opened (``relative_to`` names the folder relative paths are resolved against);
- ``check``: a callable returning a problem text or None (e.g. :func:`device_problem`);
- ``help``: one line, shown as the hint of an error.
"""


def setting(
    default: Any = dataclasses.MISSING, *, help: str, factory: Callable[[], Any] | None = None, **schema: Any
) -> Any:
    """A dataclass field whose metadata declares its schema, e.g. ``log_every: int = setting(1, min=1, help=...)``."""
    unknown = set(schema) - SCHEMA_KEYS
    if unknown:
        raise TypeError(f"unknown schema key(s) {sorted(unknown)}; valid: {sorted(SCHEMA_KEYS)}")
    meta = {**schema, "help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _num(x: float) -> str:
    return f"{x:,}".replace(",", "_") if isinstance(x, int) and abs(x) >= 100_000 else f"{x:g}"


def range_text(schema: Mapping[str, Any]) -> str:
    """The allowed values in words: ``>= 1 and <= 1_048_576``, ``>= 1 (or 0 = off)``, ``one of stop, skip``."""
    if "choices" in schema:
        return "one of " + ", ".join(str(c) for c in schema["choices"])
    bounds = (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
    text = " and ".join(f"{op} {_num(schema[k])}" for k, op in bounds if k in schema)
    return text + (" (or 0 = off)" if schema.get("allow_zero_as_off") else "")


def value_problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` under ``schema`` (see :data:`SCHEMA_KEYS`), or None. None values pass (the
    type says whether None is allowed); tuples and lists are checked element by element."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        for k, v in enumerate(value):
            problem = value_problem(v, schema)
            if problem is not None:
                return f"[{k}] {problem}" if len(value) > 1 else problem
        return None
    if "choices" in schema and value not in schema["choices"]:
        return f"must be {range_text(schema)}"
    if "check" in schema:
        return schema["check"](value)  # type: ignore[no-any-return]
    if "path" in schema:
        if schema["path"] in ("output_file", "output_dir") and "relative_to" not in schema:
            return path_problem(value, schema["path"])
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None if schema.get("allow_nonfinite") else f"must be a finite number {range_text(schema)}".rstrip()
    if value == 0 and schema.get("allow_zero_as_off"):
        return None
    outside = (
        ("min" in schema and value < schema["min"])
        or ("max" in schema and value > schema["max"])
        or ("gt" in schema and not value > schema["gt"])
        or ("lt" in schema and not value < schema["lt"])
    )
    return f"must be {range_text(schema)}" if outside else None


def device_problem(name: str) -> str | None:
    """What is wrong with a torch device name (``cpu``, ``cuda``, ``cuda:1``, ``mps``), or None."""
    if not isinstance(name, str) or _DEVICE.fullmatch(name) is None:
        return f"is not a device name (use {DEVICES})"
    return None


def check_probe_schedule(dynamics_every: int, dynamics_early_every: int, log_every: int) -> None:
    """The geometry probe runs on logged steps only: ``train.dynamics_every`` and ``train.dynamics_early_every``
    (0 = off) must be multiples of ``train.log_every`` (training and pretraining configs alike)."""
    for name, every in (("dynamics_every", dynamics_every), ("dynamics_early_every", dynamics_early_every)):
        if every and every % log_every:
            raise CsrlError(
                f"train.{name}={every} is not a multiple of train.log_every={log_every}",
                hint="the geometry probe runs on logged steps only: use a multiple of log_every",
            )


__all__ = [
    "DEVICES",
    "PATH_KINDS",
    "SCHEMA_KEYS",
    "PathKind",
    "check_probe_schedule",
    "device_problem",
    "path_problem",
    "range_text",
    "setting",
    "value_problem",
]
