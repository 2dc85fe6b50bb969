"""docs/methods.md's comparison table, from the two methods sweeps' summaries.

    csrl sweep configs/sweeps/methods.yaml            # all-MiniLM-L6-v2 start (resumable)
    csrl sweep configs/sweeps/methods-mlm-start.yaml  # csrl pretrain's masked-LM start (resumable)
    python scripts/methods_table.py                   # prints the markdown table

Reads ``runs/sweeps/<name>/summary/groups.csv`` (written by ``csrl sweep``, or ``csrl sweep CONFIG
--collect-only`` while a sweep is still running); a method with fewer than 3 finished seeds shows its ``n``.
Geometry and the gradient paradigm's values are the last probe of training (step 100, on 1,000 STS-B test
sentence1 sentences: analysis only, never training or selection), averaged over the finished seeds.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

STARTS = (("all-MiniLM-L6-v2", "methods"), ("MLM start (csrl pretrain)", "methods-mlm-start"))
COLUMNS = (  # (header, groups.csv column, digits)
    ("STS-B dev", "STS-B dev (best)", 2),
    ("anisotropy", "geometry/anisotropy", 3),
    ("alignment", "geometry/alignment", 3),
    ("uniformity", "geometry/uniformity", 3),
    ("GD", "paradigm/gd_mean", 3),
    ("W", "paradigm/w_hardest", 3),
    ("R", "paradigm/r_mean", 3),
)


KINDS = ("wiki1m, unsupervised", "SNLI dev+test, supervised", "STS-B train, supervised, in-domain")


def _kind(method: str) -> str:
    if "in-domain" in method:
        return KINDS[2]
    return KINDS[1] if "SNLI" in method else KINDS[0]


def _number(row: dict[str, str], column: str, digits: int, *, std: bool = False) -> str:
    mean = row.get(f"{column} mean", "")
    if not mean or math.isnan(float(mean)):
        return "—"
    text = f"{float(mean):.{digits}f}"
    spread = row.get(f"{column} std", "")
    if std and spread and not math.isnan(float(spread)):
        text += f" ± {float(spread):.{digits}f}"
    return text


def table(runs: Path) -> str:
    head = ["training data", "method", "start", "seeds", "7-task STS avg", *(h for h, _, _ in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (len(head) - 4)]
    rows: dict[str, dict[str, dict[str, str]]] = {}
    for start, sweep in STARTS:
        path = runs / "sweeps" / sweep / "summary" / "groups.csv"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run `csrl sweep configs/sweeps/{sweep}.yaml` (or --collect-only)")
        with path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["method"], {})[start] = row
    for kind in KINDS:  # unsupervised, then supervised on NLI, then supervised in-domain (ranked apart)
        for start, _ in STARTS:
            for method, by_start in rows.items():
                row = by_start.get(start)
                if _kind(method) != kind or row is None or int(row["n"]) == 0:
                    continue
                avg = _number(row, "Avg", 2, std=int(row["n"]) > 1)
                name = method.replace(" (supervised, in-domain)", "")
                cells = [kind, name, start, f"{row['n']}/3", f"**{avg}**", *(_number(row, c, d) for _, c, d in COLUMNS)]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="the runs folder holding sweeps/")
    print(table(parser.parse_args().runs))


if __name__ == "__main__":
    main()
