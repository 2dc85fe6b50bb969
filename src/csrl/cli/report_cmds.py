"""``csrl dynamics``, ``csrl sweep`` and ``csrl report``: figures, grid sweeps and HTML reports.

Hooked into :func:`csrl.cli.main.build_parser` by ``add_parsers(sub)``. Like the rest of ``csrl.cli``,
these read argv and the environment (``CSRL_DATA_DIR``), call one library function each
(``csrl.report`` or ``csrl.sweep``) and print what it returns.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from csrl.cli import options as opt
from csrl.cli.common import data_dir_from
from csrl.errors import CsrlError


def cmd_dynamics(args: argparse.Namespace) -> int:
    from csrl.report.dynamics import plot_run

    run = Path(args.run_dir)
    if not run.is_dir():
        raise CsrlError(f"run folder {run} does not exist", hint="pass the output_dir of a csrl train run")
    t0 = time.perf_counter()
    paths = plot_run(run, args.out)
    for p in paths:
        print(p)
    print(f"{len(paths)} figures in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from csrl.sweep import run

    out = run(
        Path(args.config),
        output_dir=args.output_dir,
        data_dir=data_dir_from(args),
        jobs=args.jobs,
        threads=args.threads,
        collect_only=args.collect_only,
        dry_run=args.dry_run,
    )
    sweep = out.sweep
    if args.dry_run:
        print(f"{len(sweep.cells)} cells -> {sweep.output_dir}/cells/")
        for c in sweep.cells:
            print(f"  {c.name}")
        return 0
    print(out.markdown)
    print(f"summary: {', '.join(str(p) for p in out.summary[:4])} (+{len(out.summary) - 4} figures)")
    print(f"report: csrl report {sweep.output_dir}   ({out.seconds:.0f}s)")
    if out.failed:
        print(f"failed cells ({len(out.failed)}): {', '.join(out.failed)}; see their train.log; rerun to retry")
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from csrl.report.html import write_report

    t0 = time.perf_counter()
    first, *more = args.path
    out = write_report(Path(first), args.out, more=[Path(m) for m in more], figures_dir=args.figures)
    size = out.stat().st_size / 1e6
    print(f"report written to {out} ({size:.1f} MB, {time.perf_counter() - t0:.1f}s)")
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``dynamics``, ``sweep`` and ``report`` to the ``csrl`` subparsers."""
    d = sub.add_parser("dynamics", help="learning-dynamics figures from a run's metrics.jsonl")
    d.add_argument("run_dir", type=opt.run_dir, help="a run folder (csrl train output_dir)")
    d.add_argument("--out", type=opt.output_dir, help="output folder (default: RUN_DIR/dynamics)")
    d.set_defaults(func=cmd_dynamics)

    s = sub.add_parser("sweep", help="run a grid of training runs (resumable) and compare them")
    s.add_argument("config", type=opt.existing_file.named("sweep file"), help="sweep YAML (see configs/sweeps/)")
    s.add_argument("--collect-only", action="store_true", help="re-collect tables and plots without running")
    s.add_argument("--dry-run", action="store_true", help="expand and validate the grid, list the cells, stop")
    s.add_argument(
        "--jobs", type=opt.IntOption(1, 1024), default=None, help="cells at once (default: the sweep's setting, 1)"
    )
    s.add_argument("--output-dir", type=opt.output_dir, help="sweep folder (overrides output_dir)")
    s.add_argument("--data-dir", type=opt.data_dir, help="data folder (default: $CSRL_DATA_DIR or ~/.cache/csrl/data)")
    s.add_argument("--threads", type=opt.threads, default=None, help="torch CPU threads per cell")
    s.set_defaults(func=cmd_sweep)

    r = sub.add_parser(
        "report",
        help="one self-contained HTML page for a run or a sweep folder, or for several in training order",
        epilog="e.g. csrl report runs/pretrain-mlm-cpu runs/sweeps/paperA-mlm-start --out stages.html: the "
        "geometry from masked-LM pretraining through SimCSE on one page",
    )
    r.add_argument(
        "path",
        nargs="+",
        type=opt.existing_dir.named("run or sweep folder"),
        help="a run folder or a sweep folder; several: one page, in training order (e.g. pretraining, then SimCSE)",
    )
    r.add_argument("--out", "-o", type=opt.output_file, help="output file (default: PATH/report.html)")
    r.add_argument("--figures", type=opt.output_dir, help="also write every figure of the page as PNG into this folder")
    r.set_defaults(func=cmd_report)


__all__ = ["add_parsers", "cmd_dynamics", "cmd_report", "cmd_sweep"]
