"""Grid sweeps: expand a grid over a run config, run each cell as a resumable subprocess, summarise.

- :mod:`csrl.sweep.grid`: the sweep file, its axes and cells (``load_sweep``; nothing runs);
- :mod:`csrl.sweep.runner`: cells as ``csrl train`` subprocesses with resume, retries and timeouts,
  the cheap STS-B test score, and :func:`run`, the whole job of ``csrl sweep``.

The folder a sweep writes (:mod:`csrl.report.sweep_layout`) is read back by :mod:`csrl.report.sweep`,
which collects finished cells into tables and figures; ``report`` never imports this package.
"""

from csrl.sweep.grid import Axis, Cell, Sweep, SweepSettings, expand, load_sweep, parse_axes, parse_grid
from csrl.sweep.runner import SweepOutcome, prepare_cell, run, run_cell, run_sweep, score_stsb

__all__ = [
    "Axis",
    "Cell",
    "Sweep",
    "SweepOutcome",
    "SweepSettings",
    "expand",
    "load_sweep",
    "parse_axes",
    "parse_grid",
    "prepare_cell",
    "run",
    "run_cell",
    "run_sweep",
    "score_stsb",
]
