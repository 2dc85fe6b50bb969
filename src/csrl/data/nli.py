"""Supervised SimCSE triplets (``sent0, sent1, hard_neg``) from SentEval's SNLI files.

For each premise (``s1``) that has both an ``entailment`` and a ``contradiction`` hypothesis (``s2``),
one triplet: premise, entailment hypothesis (positive), contradiction hypothesis (hard negative) — the
construction of SimCSE's ``nli_for_simcse.csv``. SentEval's SNLI copy is Moses-tokenised; sentences are
re-joined with single spaces. With several hypotheses of a label, the first one in file order is used.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from csrl.errors import CsrlError
from csrl.utils.io import atomic_write_text


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise CsrlError(
            f"SNLI file {path} not found",
            hint="set CSRL_DATA_DIR (or --data-dir) to the data folder holding nli/senteval_snli",
        )
    return path.read_text(encoding="utf-8").splitlines()


def snli_triplets(folder: Path, splits: Sequence[str] = ("dev", "test")) -> list[tuple[str, str, str]]:
    """Triplets from ``s1.<split>``, ``s2.<split>``, ``labels.<split>`` (line-aligned)."""
    out: list[tuple[str, str, str]] = []
    for split in splits:
        s1, s2, labels = (_lines(folder / f"{name}.{split}") for name in ("s1", "s2", "labels"))
        if not len(s1) == len(s2) == len(labels):
            raise CsrlError(
                f"{folder}: s1.{split}, s2.{split}, labels.{split} have {len(s1)}, {len(s2)}, {len(labels)} lines",
                hint="the three files must be line-aligned",
            )
        by_premise: dict[str, dict[str, str]] = {}
        order: list[str] = []
        for k, (p, h, lab) in enumerate(zip(s1, s2, labels, strict=True), start=1):
            lab = lab.strip()
            if lab not in ("entailment", "neutral", "contradiction"):
                raise CsrlError(f"{folder / f'labels.{split}'}:{k}: unknown label {lab!r}")
            p, h = " ".join(p.split()), " ".join(h.split())
            if p not in by_premise:
                by_premise[p] = {}
                order.append(p)
            by_premise[p].setdefault(lab, h)
        for p in order:
            hyp = by_premise[p]
            if "entailment" in hyp and "contradiction" in hyp:
                out.append((p, hyp["entailment"], hyp["contradiction"]))
    return out


def write_triplets_csv(triplets: Sequence[tuple[str, str, str]], path: Path) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["sent0", "sent1", "hard_neg"])
    w.writerows(triplets)
    atomic_write_text(path, buf.getvalue())
    return path
