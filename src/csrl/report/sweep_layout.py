"""The on-disk layout of a sweep folder, and a cell's state read from it.

Written by :mod:`csrl.sweep` (and the trainer it runs), read by :mod:`csrl.report.sweep`::

    <output_dir>/sweep.json             the resolved sweep (axes, settings, base config, cells)
    <output_dir>/cells/<name>/          one run folder per cell:
        cell.yaml, cell.json            the config it runs; its grid values and attempts
        train.log                       the trainer's output, one block per attempt
        metrics.jsonl, best/, results/  the trainer's files (results/sts_stsb.json: the sweep's STS-B score)
        checkpoints/                    resumable checkpoints (pruned once the cell is done)
        DONE                            written atomically when the cell is finished
    <output_dir>/summary/               tables and figures (csrl.report.sweep.write_summary)

This module only names paths and reads files; it lives in ``report`` so that the reader needs nothing
from the sweep runner (``csrl.sweep`` imports it, never the other way round).
"""

from __future__ import annotations

import re
from pathlib import Path

from csrl.train.checkpoint import latest_checkpoint

__all__ = ["CELL_JSON", "CELL_YAML", "DONE", "STSB_RESULT", "SWEEP_JSON", "cell_dir", "cell_state", "safe_name"]

SWEEP_JSON = "sweep.json"
CELL_JSON = "cell.json"
CELL_YAML = "cell.yaml"
DONE = "DONE"
STSB_RESULT = Path("results") / "sts_stsb.json"


def cell_dir(sweep_dir: Path, name: str) -> Path:
    return sweep_dir / "cells" / name


def safe_name(text: str) -> str:
    """``text`` fit for a file name: anything but letters, digits and ``._=+-`` becomes ``-``."""
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)


def cell_state(path: Path) -> str:
    """done | partial (a checkpoint to resume from) | started | new."""
    if (path / DONE).exists():
        return "done"
    if latest_checkpoint(path / "checkpoints") is not None:
        return "partial"
    return "started" if (path / CELL_JSON).exists() else "new"
