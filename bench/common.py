"""Shared pieces of the benchmarks: contenders in their own subprocesses, peak RSS, tables with ratios.

Each benchmark script is both the parent and the child: the parent re-runs the script with
``--child NAME --result FILE`` once per contender and repeat (round-robin, so a change in the machine's
load hits every contender alike), and the child does the work and writes a JSON dict of measurements,
to which :func:`finish_child` adds the child's peak RSS (``ru_maxrss``). Nothing is measured in the
parent, so the peaks are clean and no contender warms another's caches.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
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
    """Records ``perf_counter`` after every optimizer step; throughput excludes the warm-up steps."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.marks: list[float] = []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())

    def sentences_per_s(self, batch: int, warmup: int) -> float:
        """Sentences (anchors, not views) per second over steps ``warmup + 1 ... last``."""
        if len(self.marks) <= warmup:
            raise RuntimeError(f"only {len(self.marks)} steps timed, warm-up is {warmup}")
        start = self.marks[warmup - 1] if warmup > 0 else self.t0
        steps = len(self.marks) - warmup
        return steps * batch / (self.marks[-1] - start)


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
    """Run ``script --child name`` in a fresh interpreter and return its JSON result (``error`` on failure)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), "--child", name, "--result", str(out), *argv]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
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
    """Every contender ``repeats`` times, interleaved (A B C A B C ...); results per contender."""
    results: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for r in range(repeats):
        for c in contenders:
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
    """CPU model, cores, load, torch/transformers versions: one markdown-friendly line."""
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
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
