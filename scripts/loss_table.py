"""Train every loss recipe in configs/losses/ for several seeds and tabulate the 7-task STS average.

    python scripts/loss_table.py --seeds 42 43 44 --out docs/loss_table.md [--set train.device=cuda ...]

Each run is `csrl train configs/losses/<loss>.yaml --set train.seed=S` (in this process, one after
another); the untrained model is evaluated once with the same evaluation pooler (cls_before_pooler).
Finished runs (results/sts_test.json present) are reused, so the script resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    p.add_argument("--losses", nargs="*", default=None, help="recipe names (default: all in configs/losses)")
    p.add_argument("--runs", default="runs/losses")
    p.add_argument("--out", default="docs/loss_table.md")
    p.add_argument("--set", action="append", default=[], help="extra overrides for every run")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    from csrl.cli.main import main as csrl

    recipes = sorted((ROOT / "configs" / "losses").glob("*.yaml"))
    if args.losses:
        recipes = [r for r in recipes if r.stem in args.losses]
    common = ["--data-dir", args.data_dir] if args.data_dir else []
    sets = [x for s in args.set for x in ("--set", s)]
    runs = Path(args.runs)
    rows: dict[str, list[dict[str, float]]] = {}
    timings: dict[str, list[float]] = {}
    for recipe in recipes:
        for seed in args.seeds:
            out = runs / recipe.stem / f"seed{seed}"
            res = out / "results" / "sts_test.json"
            if not res.exists():
                t0 = time.perf_counter()
                if (out / "config.json").exists():  # an interrupted cell: continue it (a run owns its folder)
                    argv = ["train", "--resume", str(out), "--no-before", *common]
                else:
                    argv = ["train", str(recipe), "--no-before", "--output-dir", str(out)]
                    argv += ["--set", f"train.seed={seed}", "--set", "train.progress=false", *sets, *common]
                code = csrl(argv)
                if code != 0:
                    print(f"{recipe.stem} seed {seed}: exit {code}", file=sys.stderr)
                    continue
                timings.setdefault(recipe.stem, []).append(time.perf_counter() - t0)
            rows.setdefault(recipe.stem, []).append(json.loads(res.read_text())["reported"])
    base = runs / "untrained.json"
    if not base.exists():
        model = next(
            (s.split("=", 1)[1] for s in args.set if s.startswith("model.model=")), "embedded:all-MiniLM-L6-v2"
        )
        csrl(["eval", model, "--pooler", "cls_before_pooler", "-o", str(base), *common])
    untrained = json.loads(base.read_text())["sts"]["reported"]

    def fmt(vals: list[float]) -> str:
        if len(vals) == 1:
            return f"{vals[0]:.2f}"
        return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"

    lines = [
        f"| loss | {' | '.join(TASKS)} | Avg (mean ± std over seeds {', '.join(map(str, args.seeds))}) |",
        "|---|" + "---:|" * (len(TASKS) + 1),
        "| untrained (cls_before_pooler) | "
        + " | ".join(f"{untrained[t]:.2f}" for t in TASKS)
        + f" | {untrained['Avg']:.2f} |",
    ]
    for name, rs in rows.items():
        lines.append(
            f"| {name} | "
            + " | ".join(fmt([r[t] for r in rs]) for t in TASKS)
            + f" | **{fmt([r['Avg'] for r in rs])}** |"
        )
    table = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")
    print(table)
    for name, ts in timings.items():
        print(f"{name}: {statistics.mean(ts):.0f}s per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
