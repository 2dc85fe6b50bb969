"""Shared pieces of the benchmarks: contenders in their own subprocesses, peak RSS, tables with ratios.

Each benchmark script is both the parent and the child: the parent re-runs the script with
``--child NAME --result FILE`` once per contender and repeat (round-robin, so a change in the machine's
load hits every contender alike), and the child does the work and writes a JSON dict of measurements,
to which :func:`finish_child` adds the child's peak RSS (``ru_maxrss``). Nothing is measured in the
parent, so the peaks are clean and no contender warms another's caches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WIKI = "train/wiki/wiki1m_for_simcse.head.txt"


# ----------------------------------------------------------------------------- child side
def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def finish_child(result_path: str | Path, values: dict[str, Any]) -> None:
    """Write a child's measurements (plus its peak RSS) for the parent to read."""
    values = {**values, "peak_rss_mb": peak_rss_mb()}
    Path(result_path).write_text(json.dumps(values))


def set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def data_dir(arg: str | None) -> Path:
    """``--data-dir``, else ``$CSRL_DATA_DIR``."""
    path = arg or os.environ.get("CSRL_DATA_DIR")
    if not path or not Path(path).is_dir():
        sys.exit("set CSRL_DATA_DIR (or pass --data-dir) to the data folder (e.g. ../shared/data)")
    return Path(path)


def wiki_sentences(root: Path, n: int) -> list[str]:
    """The first ``n`` lines of SimCSE's wiki1m head file."""
    lines = (root / WIKI).read_text(encoding="utf-8").splitlines()[:n]
    if len(lines) < n:
        sys.exit(f"{root / WIKI} has only {len(lines)} lines, {n} needed")
    return lines


class StepTimer:
    """Records ``perf_counter`` once per optimizer step; throughput excludes the warm-up steps.

    ``mark`` does nothing but read the clock, so it can sit inside a trainer (a csrl callback, an HF
    ``TrainerCallback``) without adding work to the step it times. Marks taken at the same point of every
    step are one full step apart whatever that point is: the interval from mark ``k`` to mark ``k + 1``
    holds everything the trainer does once per step.
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: list[float] = []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())

    def _check(self, warmup: int) -> None:
        if len(self.marks) <= warmup or (warmup == 0 and not self.marks):
            raise RuntimeError(f"only {len(self.marks)} steps timed, warm-up is {warmup}")

    def sentences_per_s(self, batch: int, warmup: int) -> float:
        """Sentences (anchors, not views) per second over steps ``warmup + 1 ... last``."""
        self._check(warmup)
        start = self.marks[warmup - 1] if warmup > 0 else self.t0
        steps = len(self.marks) - warmup
        return steps * batch / (self.marks[-1] - start)

    def step_seconds(self, warmup: int) -> list[float]:
        """The wall time of each step after the warm-up (mark to mark)."""
        self._check(warmup)
        start = [self.marks[warmup - 1] if warmup > 0 else self.t0, *self.marks[warmup:-1]]
        return [b - a for a, b in zip(start, self.marks[warmup:], strict=True)]

    def summary(self, batch: int, warmup: int) -> dict[str, float]:
        """Throughput over the timed window (the honest mean) and the median step (robust to one hiccup)."""
        steps = self.step_seconds(warmup)
        return {
            "sentences_per_s": self.sentences_per_s(batch, warmup),
            "median_step_ms": 1000 * statistics.median(steps),
            "timed_steps": len(steps),
        }


# ----------------------------------------------------------------------------- the CPU and csrl's defaults
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    """The ``flags`` of the first processor in ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return set(value.split())
    return set()


def cpu_bf16_flags() -> list[str]:
    """The native-bf16 units this CPU reports (``avx512_bf16``, ``amx_bf16``); empty: bf16 is emulated."""
    flags = cpu_flags()
    return [f for f in CPU_BF16_FLAGS if f in flags]


def resolve_cpu_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` when the CPU has native bf16 units, else ``fp32`` (csrl's rule, decided here
    once so that every contender of a run uses the same precision); others as given."""
    if precision == "auto":
        return "bf16" if cpu_bf16_flags() else "fp32"
    return precision


def cpu_model() -> str:
    """``lscpu``'s model name, with the native-bf16 flags it reports."""
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    flags = cpu_bf16_flags()
    return f"{model} ({', '.join(flags) if flags else 'no avx512_bf16/amx_bf16'})"


def csrl_default_overrides(
    *,
    output_dir: str | Path,
    model: str,
    batch: int,
    steps: int,
    max_length: int,
    precision: str,
    device: str,
    threads: int | None,
    train_file: str | Path | None = None,
    max_sentences: int | None = None,
) -> list[str]:
    """``--set`` overrides for csrl's ``train()`` as a user runs it, minus evaluation and checkpoints.

    Left at csrl's defaults: the loss (InfoNCE, temperature 0.05), lr, the non-finite guard
    (``train.on_nonfinite``), the trackers (``train.report_to``: metrics.jsonl + TensorBoard), compilation.
    Set: a log line every step and the gradient-paradigm statistics every step (today's defaults, pinned so
    that the benchmark keeps timing them), no STS evaluation and no periodic checkpoint (they are not
    training; the end-of-run checkpoint and model save fall after the last timed step), no progress bar
    (there is no terminal). ``max_sentences``: the records read (one epoch of exactly the timed batches).
    """
    out = [
        f"output_dir={output_dir}",
        f"model.model={model}",
        f"data.max_length={max_length}",
        f"train.batch_size={batch}",
        f"train.max_steps={steps}",
        f"train.precision={precision}",
        f"train.device={device}",
        "train.log_every=1",
        "train.paradigm_every=1",
        "train.eval_every=0",
        "train.final_eval=false",
        "train.checkpoint_every=0",
        "train.progress=false",
    ]
    if threads is not None:
        out.append(f"train.num_threads={threads}")
    if train_file is not None:
        out.append(f"data.train_files=[{train_file}]")
    if max_sentences is not None:
        out.append(f"data.max_sentences={max_sentences}")
    return out


def trainer_settings(cfg: Any) -> str:
    """The per-step settings of a csrl ``RunConfig`` that decide what a step costs, as one line."""
    t = cfg.train
    keys = ("precision", "log_every", "paradigm_every", "on_nonfinite", "report_to", "compile", "cache_chunk_size")
    parts = [f"{k}={getattr(t, k)}" for k in keys if hasattr(t, k)]
    return " ".join(p.replace(" ", "") for p in parts)


# ----------------------------------------------------------------------------- parent side
def child_parser(description: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--markdown", type=Path, help="also write the table(s) as markdown to this file")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads in each contender")
    return p


def run_child(
    script: Path,
    name: str,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``script --child name`` in a fresh interpreter and return its JSON result (``error`` on failure).

    The child leads its own process group, and a timeout kills the whole group: helpers it started (e.g.
    torch.compile's compile workers) would otherwise keep its output pipes open and the wait going."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), "--child", name, "--result", str(out), *argv]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        t0 = time.perf_counter()
        with subprocess.Popen(
            cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        ) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                return {"error": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (stderr or stdout).strip().splitlines()[-6:]
            return {"error": " | ".join(tail) or f"exit code {proc.returncode}", "wall_s": wall}
        res: dict[str, Any] = json.loads(out.read_text())
        res["wall_s"] = wall
        return res


def run_round_robin(
    script: Path,
    contenders: Sequence[str],
    argv: Sequence[str],
    repeats: int,
    *,
    env: Callable[[str], dict[str, str] | None] = lambda name: None,
    log: Callable[[str], None] = print,
) -> dict[str, list[dict[str, Any]]]:
    """Every contender ``repeats`` times, interleaved and rotated (A B C, B C A, C A B, ...): a drift of the
    machine within a round, or an effect of what ran just before, does not always hit the same contender."""
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for r in range(repeats):
        k = r % max(len(contenders), 1)
        for c in [*contenders[k:], *contenders[:k]]:
            res = run_child(script, c, argv, env=env(c))
            results[c].append(res)
            summary = res.get("error") or ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()
            )
            log(f"[{r + 1}/{repeats}] {c}: {summary}")
    return results


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in runs if key in r and r[key] is not None]
    return statistics.median(vals) if vals else None


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]], *, markdown: bool) -> str:
    """Render ``rows`` (dicts) with ``columns`` = [(key, header, format)], as markdown or aligned text."""
    head = [h for _, h, _ in columns]
    body = []
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            v = row.get(key)
            cells.append("-" if v is None else (format(v, fmt) if fmt else str(v)))
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    fmt_row = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([fmt_row(head), fmt_row(["-" * w for w in widths]), *(fmt_row(c) for c in body)])


def machine_description(threads: int) -> str:
    """CPU model (and its native-bf16 flags), cores, load, torch/transformers versions: one markdown-friendly line."""
    model = cpu_model()
    import torch
    import transformers

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, {threads} torch threads per contender"
    )


def emit(text: str, path: Path | None) -> None:
    """Print, and append to ``path`` when given."""
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text + "\n")
