"""Run a sweep's cells as resumable ``csrl train`` subprocesses, then summarise the sweep.

Each cell runs ``python -m csrl train cells/<name>/cell.yaml`` in a subprocess (folder layout:
:mod:`csrl.report.sweep_layout`). Running the sweep again skips cells with ``DONE``, resumes a started
cell from its last checkpoint (``--resume``), and retries a crashed cell up to ``max_retries`` times; user
errors (exit 2) and non-finite losses (exit 3) are not retried. A cell whose stored config differs from the
sweep's is refused rather than mixed. With ``final_tasks: stsb`` the runner scores each finished cell's
best model on STS-B test itself (:func:`score_stsb`).

A sweep owns its folder as a run owns its own (:mod:`csrl.train.run_lock`): a second sweep into the same
folder is refused, naming the first. On Linux each training child asks the kernel for SIGTERM when the
sweep dies (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the sweep stops its cells, which unwind and
release their locks; a cell still locked by a live process when the sweep starts again is named, not run.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import shutil
import signal
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
from csrl.report.sweep_layout import CELL_JSON, CELL_YAML, DONE, STSB_RESULT, SWEEP_JSON, cell_state
from csrl.sweep.grid import RUN_SECTIONS, Cell, Sweep, SweepSettings, load_sweep
from csrl.train.config import RunConfig
from csrl.train.run_lock import acquire_lock, live_holder
from csrl.utils.io import atomic_write_json, atomic_write_text

__all__ = [
    "Children",
    "SweepOutcome",
    "die_with_parent",
    "prepare_cell",
    "run",
    "run_cell",
    "run_sweep",
    "score_stsb",
    "train_command",
]

PERMANENT_EXIT_CODES = (2, 3)  # CsrlError (a user mistake), NonFiniteError: retrying gives the same result
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- one cell
def _comparable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` without its output folder, with settings it lacks at their defaults: a setting added to csrl after
    a cell started (at its default value, which the started cell ran with) is not a change of the cell's config."""
    defaults = RunConfig().to_dict()
    return {
        k: {**defaults[k], **v} if isinstance(v, Mapping) and isinstance(defaults.get(k), Mapping) else v
        for k, v in cfg.items() if k != "output_dir"
    }  # fmt: skip


def prepare_cell(cell: Cell) -> None:
    """Write ``cell.yaml`` and ``cell.json``; refuse a folder that holds a run of another config."""
    d = cell.dir
    meta_path = d / CELL_JSON
    cfg = cell.config.to_dict()
    meta: dict[str, Any] = {"name": cell.name, "values": cell.values, "overrides": cell.overrides, "attempts": []}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        old = meta.get("config", {})
        before, now = _comparable(old), _comparable(cfg)
        if before != now:
            changed = sorted(
                f"{s}.{k}" for s in RUN_SECTIONS for k in set(before.get(s, {})) | set(now.get(s, {}))
                if before.get(s, {}).get(k) != now.get(s, {}).get(k)
            )  # fmt: skip
            raise CsrlError(
                f"cell {d} was started with another config (changed: {', '.join(changed) or 'unknown'})",
                hint="use a new output_dir for the new sweep, or delete that cell folder to rerun it",
            )
    meta["config"] = cfg
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / CELL_YAML, yaml.safe_dump(cfg, sort_keys=False))
    atomic_write_json(meta_path, meta)


def train_command(cell: Cell, settings: SweepSettings, *, python: Sequence[str], data_dir: Path | None,
                  threads: int | None, resume: bool) -> list[str]:  # fmt: skip
    """The ``csrl train`` command line of one attempt (a fresh start, or ``--resume`` from a checkpoint)."""
    cmd = [*python, "-m", "csrl", "train"]
    cmd += ["--resume", str(cell.dir)] if resume else [str(cell.dir / CELL_YAML)]
    if not settings.eval_before:
        cmd.append("--no-before")
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if threads:
        cmd += ["--threads", str(threads)]
    return cmd


_EVAL_LOCK = threading.Lock()  # one STS-B scoring at a time when cells run in parallel


def score_stsb(cell: Cell, data_dir: Path | None) -> Path:
    """STS-B test Spearman of the cell's best model -> ``results/sts_stsb.json`` (STSResults JSON)."""
    from csrl.evaluate.sts import evaluate_stsb_test
    from csrl.models.encoder import Encoder, pooler_override

    t = cell.config.train
    with _EVAL_LOCK:
        enc = Encoder.from_pretrained(model=str(cell.dir / "best"))
        with pooler_override(enc, t.final_eval_pooler):
            res = evaluate_stsb_test(lambda s: enc.encode(s, batch_size=t.eval_batch_size), data_dir)
    out = cell.dir / STSB_RESULT
    atomic_write_text(out, res.to_json())
    return out


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when the thread that started it dies (Linux;
    None elsewhere). libc is resolved here, in the parent: the child only makes two system calls."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal will come
            os._exit(143)

    return preexec


class Children:
    """A sweep's running training subprocesses, stopped together (SIGTERM, then SIGKILL after ``grace_s``)
    when the sweep is interrupted, from whichever thread sees the interruption."""

    def __init__(self, grace_s: float = 30.0) -> None:
        self.grace_s = grace_s
        self.stopping = False
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()

    def start(self, cmd: Sequence[str], out: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self.stopping:
                raise KeyboardInterrupt
            proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent())
            self._running.add(proc)
            return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running.discard(proc)

    def stop_all(self) -> None:
        with self._lock:
            self.stopping = True
            procs = list(self._running)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()  # a training child unwinds: says where its run stands, releases its lock
        deadline = time.monotonic() + self.grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _attempt(cmd: Sequence[str], log_path: Path, attempt: int, timeout_s: float | None, children: Children) -> int:
    """Run one attempt with its output appended to ``train.log``; its exit code (-9 past ``timeout_s``)."""
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {attempt}: {' '.join(cmd)}\n")
        fh.flush()
        proc = children.start(cmd, fh)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            fh.write(f"\n=== killed after the {timeout_s} s limit\n")
            return -9
        except KeyboardInterrupt:  # this thread was interrupted (Ctrl-C, or SIGTERM via the CLI): stop every cell
            children.stop_all()
            raise
        finally:
            children.forget(proc)


def run_cell(
    cell: Cell,
    settings: SweepSettings,
    *,
    data_dir: Path | None = None,
    python: Sequence[str] = (sys.executable,),
    threads: int | None = None,
    log: Log = print,
    children: Children | None = None,
) -> str:
    """Run (or resume, or retry) one cell until it is done; returns skipped | done | failed.

    ``children``: the sweep's running subprocesses (an interrupted sweep stops them and retries nothing)."""
    children = children if children is not None else Children()
    if cell_state(cell.dir) == "done":
        return "skipped"
    holder = live_holder(cell.dir)
    if holder is not None:  # e.g. the child of a sweep that was killed before it could stop it
        log(f"  {cell.name}: still being trained by {holder.describe()}; wait for it to finish or stop it "
            f"(kill {holder.pid}), then run the sweep again")  # fmt: skip
        return "failed"
    prepare_cell(cell)
    meta_path = cell.dir / CELL_JSON
    log_path = cell.dir / "train.log"
    for attempt in range(1, settings.max_retries + 2):
        # a started run resumes (from its newest intact checkpoint, or from the start if it has none)
        resume = cell_state(cell.dir) == "partial" or (cell.dir / "config.json").is_file()
        cmd = train_command(cell, settings, python=python, data_dir=data_dir, threads=threads, resume=resume)
        log(f"  {cell.name}: {'resuming' if resume else 'starting'} (attempt {attempt})")
        started = time.perf_counter()
        rc: int | None = None  # None: this process was interrupted while the attempt ran
        try:
            rc = _attempt(cmd, log_path, attempt, settings.timeout_s, children)
        finally:  # recorded however the attempt ends, so the cell's compute time survives an interrupted sweep
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            meta["attempts"].append({"resume": resume, "exit_code": rc, "seconds": time.perf_counter() - started})
            atomic_write_json(meta_path, meta)
        if children.stopping:  # the sweep was interrupted while this cell ran: no retry
            raise KeyboardInterrupt
        if rc == 0:
            break
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        log(f"  {cell.name}: exit code {rc}: " + " / ".join(tail))
        if rc in PERMANENT_EXIT_CODES:
            return "failed"
    else:
        return "failed"
    scoring = time.perf_counter()
    if settings.final_tasks == "stsb":
        score_stsb(cell, data_dir)
    # the cell's seconds: every recorded attempt, those of earlier interrupted sweeps included, and the scoring
    attempts = json.loads(meta_path.read_text(encoding="utf-8"))["attempts"]
    seconds = sum(float(a["seconds"]) for a in attempts) + time.perf_counter() - scoring
    atomic_write_json(cell.dir / DONE, {"seconds": seconds, "finished": time.time()})
    if settings.prune_checkpoints:
        shutil.rmtree(cell.dir / "checkpoints", ignore_errors=True)
    return "done"


# ----------------------------------------------------------------------------- a sweep
def run_sweep(
    sweep: Sweep,
    *,
    data_dir: Path | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    python: Sequence[str] = (sys.executable,),
    log: Log = print,
) -> dict[str, str]:
    """Run every unfinished cell (``jobs`` at a time); returns cell name -> skipped | done | failed.

    The sweep folder is locked for the duration (a second sweep into it is refused, naming this one)."""
    with acquire_lock(sweep.output_dir, what="sweep", log=log):
        return _run_cells(sweep, data_dir=data_dir, jobs=jobs, threads=threads, python=python, log=log)


def _run_cells(sweep: Sweep, *, data_dir: Path | None, jobs: int | None, threads: int | None,
               python: Sequence[str], log: Log) -> dict[str, str]:  # fmt: skip
    atomic_write_json(sweep.output_dir / SWEEP_JSON, sweep.to_dict())
    jobs = jobs or sweep.settings.jobs
    threads = threads or sweep.settings.threads or (max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None)
    todo = [c for c in sweep.cells if cell_state(c.dir) != "done"]
    log(f"sweep {sweep.output_dir}: {len(sweep.cells)} cells, {len(sweep.cells) - len(todo)} done, "
        f"{len(todo)} to run ({jobs} at a time)")  # fmt: skip
    status = {c.name: "skipped" for c in sweep.cells if c not in todo}
    counter = itertools.count(1)
    children = Children()

    def one(cell: Cell) -> tuple[str, str]:
        k = next(counter)
        t0 = time.perf_counter()
        log(f"[{k}/{len(todo)}] {cell.name}")
        st = run_cell(cell, sweep.settings, data_dir=data_dir, python=python, threads=threads, log=log,
                      children=children)  # fmt: skip
        log(f"[{k}/{len(todo)}] {cell.name}: {st} in {time.perf_counter() - t0:.0f} s")
        return cell.name, st

    if jobs == 1:
        results = [one(c) for c in todo]
    else:
        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            results = list(pool.map(one, todo))
        except KeyboardInterrupt:  # the main thread sees it; the cells run in the workers' children
            children.stop_all()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    status.update(dict(results))
    return status


@dataclass(frozen=True)
class SweepOutcome:
    """What :func:`run` did: the expanded sweep, each run cell's status and the summary it wrote."""

    sweep: Sweep
    status: dict[str, str] = field(default_factory=dict)  # cell name -> skipped | done | failed (if cells ran)
    summary: list[Path] = field(default_factory=list)  # results.md, cells.csv, groups.csv, collected.json, figures
    markdown: str = ""  # the text of summary/results.md
    seconds: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [name for name, st in self.status.items() if st == "failed"]


def run(
    path: Path | str,
    *,
    output_dir: Path | str | None = None,
    data_dir: Path | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    collect_only: bool = False,
    dry_run: bool = False,
    log: Log = print,
) -> SweepOutcome:
    """The whole job of ``csrl sweep``: load and expand the sweep file, run its unfinished cells, write the summary.

    ``dry_run``: expand and validate only (nothing is run or written). ``collect_only``: skip running and
    summarise what the sweep folder holds (a folder without ``sweep.json`` is an error).
    """
    t0 = time.perf_counter()
    sweep = load_sweep(path, output_dir=output_dir)
    if dry_run:
        return SweepOutcome(sweep)
    from csrl.report.sweep import write_summary  # loads matplotlib: only when a summary is drawn

    status: dict[str, str] = {}
    if not collect_only:
        status = run_sweep(sweep, data_dir=data_dir, jobs=jobs, threads=threads, log=log)
    elif not (sweep.output_dir / SWEEP_JSON).is_file():
        raise CsrlError(
            f"nothing to collect: {sweep.output_dir} holds no sweep yet", hint="run it without --collect-only"
        )
    paths = write_summary(sweep.output_dir)
    markdown = paths[0].read_text(encoding="utf-8")
    return SweepOutcome(sweep, status, paths, markdown, time.perf_counter() - t0)
