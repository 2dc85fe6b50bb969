"""Where the time of csrl's training step goes: ``train()`` at its defaults, profiled step by step.

Runs ``csrl.train.loop.train()`` three times in this process on the packaged all-MiniLM-L6-v2 (batch 64,
max length 32, CPU; evaluation and periodic checkpoints off, everything else at csrl's defaults: a log line
and the gradient-paradigm statistics every step, the non-finite guard, metrics.jsonl + TensorBoard):

  1. plain timing: a callback records ``time.perf_counter()`` and nothing else -> the wall time per step;
  2. ``torch.profiler`` over the steps after the warm-up -> the top ops by self CPU time;
  3. ``cProfile`` over the same steps -> the top Python functions by cumulative time, and the same for
     the functions of csrl and the trackers alone (what a bare PyTorch loop does not run).

The profilers are started and stopped from a callback, which the trainer calls once per step (every
logged step; every step at the default ``train.log_every=1``), so each profiled window is exactly
``--steps`` whole steps: from one callback to the next the trainer does everything it does once per step.
The profiled passes pay the profilers' overhead; the per-step time of pass 1 is the honest one.

It uses csrl's public entry points only (``load_config``, ``train``, callbacks), so it runs against any
checkout of csrl given by ``PYTHONPATH``, e.g. a copy of the code before a change::

    PYTHONPATH=/tmp/csrl-before/src .venv/bin/python bench/profile_step.py --out /tmp/profile-before.md
    PYTHONPATH=src .venv/bin/python bench/profile_step.py --out /tmp/profile-after.md

``--data-dir`` (default ``$CSRL_DATA_DIR``) is the data folder (its wiki1m head file is the corpus).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside this file
from common import (  # noqa: E402
    StepTimer,
    cpu_model,
    csrl_default_overrides,
    data_dir,
    resolve_cpu_precision,
    trainer_settings,
)

MODEL, MAX_LEN = "embedded:all-MiniLM-L6-v2", 32

TRAINER_WORK = (
    ("non-finite guard: max-norm of every gradient (host)", "train/step.py", "grads_finite"),
    ("non-finite guard on the device (check)", "train/guard.py", "check"),
    ("non-finite guard: host reads of its decisions", "train/guard.py", "settle"),
    ("gradient-paradigm statistics", "losses/paradigm.py", "step_stats"),
    ("gradient-paradigm statistics (device tensors)", "losses/paradigm.py", "step_stats_tensors"),
    ("log_step: loss values, paradigm statistics, callbacks", "train/loop.py", "log_step"),
    ("settle: reading queued values, writing the metrics", "train/loop.py", "settle"),
    ("metrics.jsonl line + trackers (MetricsLog.log)", "train/records.py", "log"),
    ("TensorBoard (SummaryWriter.add_scalar)", "tensorboard/writer.py", "add_scalar"),
    ("batch records + duplicate-sentence check", "train/batches.py", "records"),
    ("duplicate-sentence check", "data/sampler.py", "find_duplicates_in_batch"),
    ("learning-rate schedule", "train/schedule.py", "lr_at"),
    ("progress bar update", "train/records.py", "update"),
    ("torch.isfinite calls (any caller)", "~", "torch.isfinite"),
    ("Tensor.item calls (host reads; any caller, e.g. the for-loop AdamW)", "~", "'item'"),
    ("Tensor.tolist calls (host reads; any caller)", "~", "'tolist'"),
)
"""Work csrl's trainer does in a step that a bare loop does not: (label, file suffix, function name). A
function a checkout does not have is left out; ``~`` marks C functions (matched by a part of the name)."""


def run_train(args: Any, root: Path, on_step: Callable[[int], None]) -> Any:
    """One ``train()`` run of ``warmup + steps`` steps; ``on_step(k)`` is called from a callback at step k."""
    from csrl.train.config import load_config
    from csrl.train.loop import train

    total = args.warmup + args.steps

    def callback(info: Any) -> None:
        on_step(info.step)

    with tempfile.TemporaryDirectory() as out:
        overrides = csrl_default_overrides(
            output_dir=out, model=MODEL, batch=args.batch, steps=total, max_length=MAX_LEN,
            precision=args.precision, device="cpu", threads=args.threads, max_sentences=args.batch * total,
        )  # fmt: skip
        cfg = load_config(None, overrides)
        train(cfg, data_dir=root, callbacks=[callback], log=lambda s: None)
    return cfg


def time_steps(args: Any, root: Path) -> tuple[list[float], str]:
    """Pass 1: the wall time of each step after the warm-up, nothing else added to the step."""
    timer = StepTimer()
    cfg = run_train(args, root, lambda step: timer.mark())
    return timer.step_seconds(args.warmup), trainer_settings(cfg)


def torch_profile(args: Any, root: Path) -> tuple[str, float]:
    """Pass 2: torch.profiler over the steps after the warm-up; the op table and its per-step wall time."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    window: list[float] = []

    def on_step(step: int) -> None:
        if step == args.warmup:
            window.append(time.perf_counter())
            prof.start()
        elif step > args.warmup:
            prof.step()
            if step == args.warmup + args.steps:
                prof.stop()
                window.append(time.perf_counter())

    run_train(args, root, on_step)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    n = args.steps
    rows = [
        f"| `{e.key}` | {e.self_cpu_time_total / 1000 / n:.1f} | {100 * e.self_cpu_time_total / total:.1f} | "
        f"{e.cpu_time_total / 1000 / n:.1f} | {e.count / n:g} |"
        for e in events[: args.top_ops]
    ]
    head = "| op | self CPU ms/step | self % | CPU total ms/step | calls/step |\n|---|---|---|---|---|"
    return head + "\n" + "\n".join(rows), (window[1] - window[0]) / args.steps


def python_profile(args: Any, root: Path) -> tuple[pstats.Stats, float]:
    """Pass 3: cProfile over the steps after the warm-up."""
    prof = cProfile.Profile()
    window: list[float] = []

    def on_step(step: int) -> None:
        if step == args.warmup:
            window.append(time.perf_counter())
            prof.enable()
        elif step == args.warmup + args.steps:
            prof.disable()
            window.append(time.perf_counter())

    run_train(args, root, on_step)
    return pstats.Stats(prof), (window[1] - window[0]) / args.steps


def trainer_work(stats: pstats.Stats, steps: int) -> str:
    """Markdown rows of :data:`TRAINER_WORK` found in ``stats``: cumulative ms, own ms and calls per step."""
    rows = []
    for label, suffix, name in TRAINER_WORK:
        cum = own = calls = 0.0
        for (filename, _, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
            path = filename.replace(os.sep, "/")
            hit = name in func if suffix == "~" else path.endswith(suffix) and func == name
            if hit:
                cum, own, calls = cum + cumtime, own + tottime, calls + ncalls
        if calls:
            rows.append((1000 * cum / steps, f"| {label} | `{name}` | {1000 * cum / steps:.1f} | "
                         f"{1000 * own / steps:.1f} | {calls / steps:g} |"))  # fmt: skip
    rows.sort(reverse=True)
    return "\n".join(r for _, r in rows) if rows else "| (none found) | | | | |"


def stats_text(stats: pstats.Stats, top: int, *restrict: str) -> str:
    buf = io.StringIO()
    stats.stream = buf  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(*restrict, top)
    lines = buf.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start:])


def per_step_rows(stats: pstats.Stats, steps: int, top: int, pattern: str) -> list[tuple[float, float, int, str]]:
    """(cumulative ms per step, own ms per step, calls per step, name) of the functions whose file matches."""
    rows = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        if pattern in filename.replace(os.sep, "/"):
            short = "/".join(Path(filename).parts[-2:])
            rows.append(
                (1000 * cumtime / steps, 1000 * tottime / steps, round(ncalls / steps), f"{short}:{line} {name}")
            )
    rows.sort(reverse=True)
    return rows[:top]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="markdown report")
    p.add_argument("--data-dir", default=None, help="data folder (default: $CSRL_DATA_DIR)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=6, help="profiled steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="first steps, not profiled")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (train.num_threads)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="auto: bf16 on bf16 CPUs")
    p.add_argument("--top-ops", type=int, default=30, help="rows of the op table")
    p.add_argument("--top-functions", type=int, default=25, help="rows of the Python tables")
    args = p.parse_args()
    if args.warmup < 1:
        p.error("--warmup must be at least 1 (the profilers start at the callback of the last warm-up step)")
    args.precision = resolve_cpu_precision(args.precision)
    root = data_dir(args.data_dir)

    import torch
    import transformers

    import csrl

    t0 = time.perf_counter()
    print(f"csrl from {Path(csrl.__file__).parent}", flush=True)
    steps_s, settings = time_steps(args, root)
    print(f"pass 1 (timing): median step {1000 * statistics.median(steps_s):.0f} ms", flush=True)
    ops, torch_step = torch_profile(args, root)
    print(f"pass 2 (torch.profiler): {1000 * torch_step:.0f} ms per step", flush=True)
    stats, py_step = python_profile(args, root)
    print(f"pass 3 (cProfile): {1000 * py_step:.0f} ms per step", flush=True)

    ms = [f"{1000 * s:.0f}" for s in steps_s]
    own = per_step_rows(stats, args.steps, args.top_functions, "/csrl/")
    trackers = per_step_rows(stats, args.steps, 10, "tensorboard")
    fmt_rows = lambda rows: "\n".join(f"| {c:.1f} | {o:.1f} | {n} | `{name}` |" for c, o, n, name in rows)  # noqa: E731
    report = f"""# csrl training step profile

- csrl: `{Path(csrl.__file__).parent}`
- machine: {cpu_model()}, {os.cpu_count()} cores, load average {", ".join(f"{x:.1f}" for x in os.getloadavg())};
  torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} torch threads
- run: `train()` on {MODEL}, batch {args.batch}, max length {MAX_LEN}, {args.warmup} warm-up + {args.steps}
  profiled steps; trainer settings: `{settings}`; evaluation and periodic checkpoints off
- wall time per step, no profiler (pass 1): median **{1000 * statistics.median(steps_s):.0f} ms**
  (steps: {", ".join(ms)} ms) = {args.batch / statistics.median(steps_s):.1f} sentences/s
- under torch.profiler: {1000 * torch_step:.0f} ms per step; under cProfile: {1000 * py_step:.0f} ms per step

## Top ops by self CPU time (torch.profiler, mean of {args.steps} steps)

{ops}

## Trainer work a bare loop does not do (cProfile, per step)

Rows overlap: a caller's cumulative time includes its callees (log_step includes the paradigm statistics,
MetricsLog.log includes TensorBoard). Times carry cProfile's overhead.

| work | function | cumulative ms/step | own ms/step | calls/step |
|---|---|---|---|---|
{trainer_work(stats, args.steps)}

## csrl's own functions by cumulative time per step (cProfile)

| cumulative ms/step | own ms/step | calls/step | function |
|---|---|---|---|
{fmt_rows(own)}

## TensorBoard (cProfile)

| cumulative ms/step | own ms/step | calls/step | function |
|---|---|---|---|
{fmt_rows(trackers) if trackers else "| - | - | - | no TensorBoard calls (not installed, or not in train.report_to) |"}

## Top {args.top_functions} functions by cumulative time (cProfile, {args.steps} steps, all of them)

```
{stats_text(stats, args.top_functions)}
```

Profiled in {time.perf_counter() - t0:.0f} s.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
