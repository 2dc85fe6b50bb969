"""``csrl eval`` with the embedding cache: the first run (miss), the same command again (hit), and ``--no-cache``.

Each run is the real CLI in its own process (``csrl eval MODEL -o result.json``: the packaged
all-MiniLM-L6-v2 by default, the 7 STS tasks, default settings: fp32, batch 128, torch's default threads)
with ``CSRL_CACHE_DIR`` pointing to a fresh folder. The script checks that the three runs report the same
scores (the JSON results, bitwise), that the second run read its embeddings from the cache and that the
``--no-cache`` run wrote nothing there, and prints wall times, second/first (the target: at most 0.2), each
run's peak RSS (``wait4``'s ``ru_maxrss`` of that process alone), and how long ``model_fingerprint`` takes
for the model (what every cached evaluation pays to hash the weights in memory).

Run: CSRL_DATA_DIR=../shared/data .venv/bin/python bench/eval_cache.py [--markdown out.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import data_dir, emit, machine_description, table

TARGET_RATIO = 0.2


def csrl_command() -> list[str]:
    """The installed ``csrl`` script beside this interpreter, else ``python -m csrl``."""
    script = Path(sys.executable).with_name("csrl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "csrl"]


def run_eval(argv: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """One ``csrl eval`` process: wall seconds, its own peak RSS (MiB), exit code, the cache line it printed."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([*csrl_command(), "eval", *argv], env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(encoding="utf-8", errors="replace")
    cache_line = next((line for line in text.splitlines() if "embedding cache" in line), "(no cache line)")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "rc": proc.returncode, "cache": cache_line}


def fingerprint_seconds(model: str, repeats: int = 5) -> tuple[float, float, int]:
    """(min, median) seconds of ``model_fingerprint`` on ``model``, and the bytes of tensors it hashes."""
    from csrl.evaluate.embed_cache import model_fingerprint
    from csrl.models.encoder import load_encoder

    enc = load_encoder(model)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model_fingerprint(enc)
        times.append(time.perf_counter() - t0)
    size = sum(t.numel() * t.element_size() for t in [*enc.parameters(), *enc.buffers()])
    return min(times), statistics.median(times), size


def scores(path: Path) -> Any:
    return json.loads(path.read_text())["sts"]["reported"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="data folder (default: $CSRL_DATA_DIR)")
    p.add_argument("--model", default="embedded:all-MiniLM-L6-v2")
    p.add_argument("--markdown", type=Path, help="also append the table as markdown to this file")
    args = p.parse_args()
    root = data_dir(args.data_dir)
    work = Path(tempfile.mkdtemp(prefix="csrl-eval-cache-"))
    cache = work / "cache"
    env = {**os.environ, "CSRL_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    base = [args.model, "--data-dir", str(root)]
    runs: list[dict[str, Any]] = []
    try:
        for name, extra in (("first (miss)", []), ("second (hit)", []), ("--no-cache", ["--no-cache"])):
            before = sorted(cache.glob("*")) if cache.exists() else []
            res = run_eval([*base, *extra, "-o", str(work / f"{len(runs)}.json")], env, work / f"{len(runs)}.log")
            res["run"] = name
            res["new_files"] = len(set(cache.glob("*")) - set(before)) if cache.exists() else 0
            runs.append(res)
            took = f"{res['wall_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MiB"
            print(f"{name}: {took}, exit {res['rc']}; {res['cache']}")
            if res["rc"] != 0:
                print((work / f"{len(runs) - 1}.log").read_text()[-3000:], file=sys.stderr)
                return 1
        same = scores(work / "0.json") == scores(work / "1.json") == scores(work / "2.json")
        cache_mb = sum(f.stat().st_size for f in cache.glob("*.emb")) / 1024**2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    fp_min, fp_median, fp_bytes = fingerprint_seconds(args.model)
    import torch

    ratio = runs[1]["wall_s"] / runs[0]["wall_s"]
    cols = [("run", "run", ""), ("wall_s", "wall s", ".1f"), ("peak_rss_mb", "peak RSS MiB", ".0f"),
            ("new_files", "files written to the cache", "")]  # fmt: skip
    lines = [
        f"csrl eval {args.model} (7 STS tasks, default settings) with a fresh cache folder; "
        + machine_description(torch.get_num_threads()),
        "",
        table(runs, cols, markdown=args.markdown is not None),
        "",
        f"second/first: {ratio:.3f} (target <= {TARGET_RATIO}: {'met' if ratio <= TARGET_RATIO else 'NOT met'}); "
        f"second/--no-cache: {runs[1]['wall_s'] / runs[2]['wall_s']:.3f}; cache entry {cache_mb:.1f} MiB "
        "(on a shared machine the two encoding runs differ with the load: compare the hit with both)",
        f"scores identical in the three runs: {same}; the --no-cache run wrote {runs[2]['new_files']} file(s)",
        f"model_fingerprint: {fp_min * 1000:.0f} ms min, {fp_median * 1000:.0f} ms median of 5 "
        f"({fp_bytes / 1e6:.0f} MB of tensors hashed)",
    ]
    emit("\n".join(lines), args.markdown)
    ok = same and runs[2]["new_files"] == 0 and "read from" in runs[1]["cache"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
