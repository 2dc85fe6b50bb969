"""The SentEval/SimCSE STS protocol (papers.md 3.2): cosine scores, Spearman x 100, named aggregates.

Per task: Spearman and Pearson of each sub-dataset, and three aggregates, each named:
``all`` (one correlation over the concatenation of every sub-dataset: what SimCSE reports for STS12-16),
``mean`` (unweighted mean over sub-datasets) and ``wmean`` (mean weighted by pair counts). STS-B and
SICK-R have one subset (the test split), so the three coincide. The 7-task average is the plain mean of
the reported numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from csrl.data.sts import STSTask, load_sts_suite, load_sts_task

EncodeFn = Callable[[Sequence[str]], np.ndarray]
AGGREGATES = ("all", "mean", "wmean")


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = np.einsum("ij,ij->i", a, b)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.nan_to_num(num / np.where(den == 0, np.inf, den))


def correlations(pred: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    """(Spearman, Pearson), both x 100."""
    return float(spearmanr(pred, gold)[0]) * 100, float(pearsonr(pred, gold)[0]) * 100


@dataclass
class TaskResult:
    name: str
    short_name: str
    n_pairs: int
    subsets: dict[str, dict[str, float]]  # name -> {"spearman", "pearson", "n"}
    spearman: dict[str, float]  # aggregate -> value
    pearson: dict[str, float]

    def score(self, aggregate: str = "all") -> float:
        return self.spearman[aggregate]


@dataclass
class STSResults:
    tasks: list[TaskResult]
    aggregate: str = "all"
    n_unique_sentences: int = 0
    seconds_encode: float = 0.0
    seconds_total: float = 0.0
    meta: dict[str, object] = field(default_factory=dict)

    def average(self, aggregate: str | None = None) -> float:
        return float(np.mean([t.score(aggregate or self.aggregate) for t in self.tasks]))

    def scores(self) -> dict[str, float]:
        out = {t.short_name: t.score(self.aggregate) for t in self.tasks}
        out["Avg"] = self.average()
        return out

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "reported": self.scores(), "reported_aggregate": self.aggregate}, indent=2)

    def to_markdown(self, label: str = "model") -> str:
        return markdown_table({label: self}, aggregate=self.aggregate)


def markdown_table(rows: dict[str, STSResults], *, aggregate: str = "all") -> str:
    """One row per model: the 7 task Spearman x 100 (aggregate named in the header) and their average."""
    first = next(iter(rows.values()))
    names = [t.short_name for t in first.tasks]
    head = f"| Spearman x100 (STS12-16: `{aggregate}`) | " + " | ".join(names) + " | Avg |"
    sep = "|---|" + "---:|" * (len(names) + 1)
    lines = [head, sep]
    for label, res in rows.items():
        vals = [f"{t.score(aggregate):.2f}" for t in res.tasks] + [f"{res.average(aggregate):.2f}"]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def score_task(task: STSTask, emb: dict[str, np.ndarray] | Callable[[str], np.ndarray]) -> TaskResult:
    """Score one task given an embedding lookup (sentence -> vector)."""
    lookup = emb.__getitem__ if isinstance(emb, dict) else emb
    subsets: dict[str, dict[str, float]] = {}
    preds, golds = [], []
    for p in task.subsets:
        a = np.stack([lookup(s) for s in p.sentences1])
        b = np.stack([lookup(s) for s in p.sentences2])
        pred = cosine_scores(a, b)
        sp, pe = correlations(pred, p.scores)
        subsets[p.name] = {"spearman": sp, "pearson": pe, "n": float(len(p))}
        preds.append(pred)
        golds.append(p.scores)
    sp_all, pe_all = correlations(np.concatenate(preds), np.concatenate(golds))
    n = np.array([v["n"] for v in subsets.values()])
    sp_sub = np.array([v["spearman"] for v in subsets.values()])
    pe_sub = np.array([v["pearson"] for v in subsets.values()])
    return TaskResult(
        name=task.name,
        short_name=task.short_name,
        n_pairs=int(n.sum()),
        subsets=subsets,
        spearman={"all": sp_all, "mean": float(sp_sub.mean()), "wmean": float((sp_sub * n).sum() / n.sum())},
        pearson={"all": pe_all, "mean": float(pe_sub.mean()), "wmean": float((pe_sub * n).sum() / n.sum())},
    )


def unique_sentences(tasks: Sequence[STSTask]) -> list[str]:
    """Every distinct sentence of the suite, in first-seen order."""
    return list(dict.fromkeys(s for t in tasks for s in t.sentences()))


def evaluate_sts(encode: EncodeFn, tasks: Sequence[STSTask], *, aggregate: str = "all") -> STSResults:
    """Encode each unique sentence once, then score every task.

    ``encode(sentences) -> (n, dim)`` must be deterministic (eval mode); a sentence's embedding does not
    depend on its batch, so deduplication gives the same numbers as SentEval's per-task loop.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}")
    t0 = time.perf_counter()
    uniq = unique_sentences(tasks)
    vecs = np.asarray(encode(uniq))
    t1 = time.perf_counter()
    table = {s: vecs[i] for i, s in enumerate(uniq)}
    results = [score_task(t, table) for t in tasks]
    return STSResults(
        results,
        aggregate=aggregate,
        n_unique_sentences=len(uniq),
        seconds_encode=t1 - t0,
        seconds_total=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- named evaluations
# Used by training (dev selection, final table) and by sweeps; they take an encode function, so this
# package needs no model code.
def stsb_dev_score(encode: EncodeFn, data_dir: Path | None) -> float:
    """STS-B dev Spearman x 100: SimCSE's model-selection score."""
    return evaluate_sts(encode, [load_sts_task("STSBenchmark", data_dir, split="dev")]).tasks[0].score("all")


def evaluate_stsb_test(encode: EncodeFn, data_dir: Path | None) -> STSResults:
    """STS-B test alone (a sweep cell's cheap final score)."""
    return evaluate_sts(encode, [load_sts_task("stsb", data_dir, split="test")])


def evaluate_sts_suite(encode: EncodeFn, data_dir: Path | None, *, aggregate: str = "all") -> STSResults:
    """The 7 STS test sets (STS12-16, STS-B, SICK-R) of papers.md 3.2."""
    return evaluate_sts(encode, load_sts_suite(data_dir), aggregate=aggregate)
