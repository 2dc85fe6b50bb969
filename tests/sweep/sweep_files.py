"""Sweep files for the tests of tests/sweep (imported by name, as tests/train/ddp_helpers.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_sweep(path: Path, grid: Any, *, base: dict[str, Any] | None = None, **extra: Any) -> Path:
    spec = {
        "model": {"model": "some/model", "pooler": "cls"},
        "train": {"batch_size": 8, "max_steps": 3, "eval_every": 0, "progress": False},
        **(base or {}),
        "grid": grid,
        "output_dir": str(path.parent / "out"),
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
