"""SentEval transfer tasks (MR, CR, SUBJ, MPQA, SST-2, TREC, MRPC) as SimCSE's ``evaluation.py`` runs them.

:func:`evaluate_transfer` loads the tasks, encodes every distinct sentence once, and trains linear
probes (:mod:`csrl.evaluate.probe`) on the frozen embeddings. Protocols (:data:`PROTOCOLS`):

* ``"fasttest"``: SimCSE ``--mode fasttest``: kfold 5, RMSprop, batch 128, tenacity 3, epoch_size 2;
* ``"test"``: SimCSE ``--mode test`` (the paper's numbers): kfold 10, Adam, batch 64, tenacity 5,
  epoch_size 4;
* ``"fast"``: scikit-learn logistic regression (lbfgs, C = 1 / (l2 n) for SentEval's L2 grid, see
  :mod:`csrl.evaluate.probe`) on the same 5 folds; deterministic, no early stopping.

All use seed 1111 and SentEval's validation per task: nested k-fold for MR/CR/SUBJ/MPQA, k-fold on
train then one fit for TREC and MRPC, dev-set selection for SST-2. MRPC features are
``[|u - v|, u * v]`` as in SentEval's ``mrpc.py`` (``pair_features="full"`` adds u and v); its F1 is
for the paraphrase class. Before probing, each split is put in
SentEval's order (stable sort by whitespace-token count, then label; for MRPC by both counts, then
label), because SentEval's folds and batches index that order. The reported average is the plain
mean of test accuracies (MRPC: accuracy), as in SimCSE's ``Avg.`` column.

Encoding differs from SentEval in cost, not in what the encoder sees: SentEval embeds each task and
split separately (122,639 sentences for the 7 tasks, 67,349 of them SST-2 training phrases); here
the 108,107 distinct ones are encoded once, ordered by token count, in chunks of ``batch_size`` (the
SentEval ``batch_size`` of 128 by default). Each string is SentEval's ``' '.join(tokens)``. With an
encoder whose output does not depend on the rest of its batch (up to padding noise), the
embeddings, and so the probes, are the same.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import f1_score

from csrl.data.transfer import (
    TRANSFER_TASKS,
    BinaryTask,
    LabeledPairs,
    LabeledSentences,
    SST2Task,
    TransferTask,
    TRECTask,
    load_transfer_task,
)
from csrl.errors import CsrlError
from csrl.evaluate.probe import ProbeConfig, ProbeResult, dev_selection, kfold_then_fit, nested_kfold

Encoder = Callable[[list[str]], NDArray[Any]]

PROTOCOLS: dict[str, ProbeConfig] = {
    "fasttest": ProbeConfig(optim="rmsprop", batch_size=128, tenacity=3, epoch_size=2, kfold=5),
    "test": ProbeConfig(optim="adam", batch_size=64, tenacity=5, epoch_size=4, kfold=10),
    "fast": ProbeConfig(backend="sklearn", kfold=5),
}


@dataclass(frozen=True)
class TaskResult:
    """One task, accuracies in percent as SentEval reports them (``devacc``, ``acc``, ``f1``)."""

    task: str
    dev_accuracy: float  # accuracy that selected the L2 penalty (cross-validation or SST-2 dev)
    test_accuracy: float
    test_f1: float | None  # MRPC only
    n_dev: int  # SentEval's ndev
    n_test: int  # SentEval's ntest
    l2regs: tuple[float, ...]  # selected penalty (one per outer fold for nested k-fold)
    seconds: float  # probe training and selection time


@dataclass(frozen=True)
class TransferResults:
    """All tasks of one :func:`evaluate_transfer` call, in SimCSE's column order."""

    protocol: str
    tasks: tuple[TaskResult, ...]
    n_sentences: int  # sentences over all tasks and splits
    n_encoded: int  # distinct sentences passed to the encoder
    encode_seconds: float
    probe_seconds: float
    total_seconds: float  # loading + encoding + probes

    @property
    def average(self) -> float:
        """Mean test accuracy over the evaluated tasks (all 7 for SimCSE's ``Avg.``)."""
        return round(float(np.mean([t.test_accuracy for t in self.tasks])), 2)

    def by_task(self) -> dict[str, TaskResult]:
        return {t.task: t for t in self.tasks}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": {t.task: asdict(t) for t in self.tasks}, "average": self.average}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """A SimCSE-style row of test accuracies, then per-task details and timings."""
        names = [t.task for t in self.tasks]
        label = "Avg." if len(names) == len(TRANSFER_TASKS) else f"Avg. ({len(names)} tasks)"
        lines = [
            "| protocol | " + " | ".join(names) + f" | {label} |",
            "|---" * (len(names) + 2) + "|",
            f"| {self.protocol} | "
            + " | ".join(f"{t.test_accuracy:.2f}" for t in self.tasks)
            + f" | {self.average:.2f} |",
            "",
            "| task | dev acc | test acc | test F1 | n dev | n test | L2 | probe s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in self.tasks:
            f1 = "" if t.test_f1 is None else f"{t.test_f1:.2f}"
            l2 = ", ".join(f"{v:g}" for v in t.l2regs)
            lines.append(
                f"| {t.task} | {t.dev_accuracy:.2f} | {t.test_accuracy:.2f} | {f1} | {t.n_dev} | "
                f"{t.n_test} | {l2} | {t.seconds:.1f} |"
            )
        lines += [
            "",
            f"{self.n_encoded} distinct of {self.n_sentences} sentences encoded in "
            f"{self.encode_seconds:.1f} s; probes {self.probe_seconds:.1f} s; "
            f"total {self.total_seconds:.1f} s.",
        ]
        return "\n".join(lines)


def protocol_config(protocol: str) -> ProbeConfig:
    if protocol not in PROTOCOLS:
        raise CsrlError(f"unknown transfer protocol {protocol!r}", hint=f"choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


def task_sentences(task: TransferTask) -> list[str]:
    """Every sentence of a task, all splits, in file order (duplicates kept)."""
    if isinstance(task, BinaryTask):
        return list(task.data.sentences)
    if isinstance(task, SST2Task):
        return [*task.train.sentences, *task.dev.sentences, *task.test.sentences]
    if isinstance(task, TRECTask):
        return [*task.train.sentences, *task.test.sentences]
    return [*task.train.first, *task.train.second, *task.test.first, *task.test.second]


class EmbeddingTable:
    """Embeddings of distinct sentences: ``table[sentences]`` -> (len(sentences), dim) float32."""

    def __init__(self, encode: Encoder, sentences: Sequence[str], batch_size: int | None = 128) -> None:
        distinct = list(dict.fromkeys(sentences))
        distinct.sort(key=lambda s: len(s.split()))  # stable: ties keep first appearance
        self.row = {s: i for i, s in enumerate(distinct)}
        step = batch_size or max(len(distinct), 1)
        chunks = [_encode_checked(encode, distinct[i : i + step]) for i in range(0, len(distinct), step)]
        self.matrix = np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.row)

    def __getitem__(self, sentences: Sequence[str]) -> NDArray[np.float32]:
        return self.matrix[[self.row[s] for s in sentences]]


def _encode_checked(encode: Encoder, sentences: list[str]) -> NDArray[np.float32]:
    out = np.asarray(encode(sentences), dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(sentences):
        raise ValueError(f"encode returned shape {out.shape} for {len(sentences)} sentences; expected (n, dim)")
    if not np.isfinite(out).all():
        raise ValueError("encode returned NaN or infinite values")
    return out


def senteval_order(*keys: Sequence[int]) -> NDArray[np.int64]:
    """Indices that stably sort samples by the given keys (e.g. token count, then label), as SentEval."""
    return np.asarray(sorted(range(len(keys[0])), key=lambda i: tuple(k[i] for k in keys)), dtype=np.int64)


def _sorted_split(split: LabeledSentences, table: EmbeddingTable) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    order = senteval_order([len(s.split()) for s in split.sentences], split.labels)
    x = table[split.sentences][order]
    return x, np.asarray(split.labels, dtype=np.int64)[order]


PairFeatures = Literal["senteval", "full"]


def _pair_features(
    pairs: LabeledPairs, table: EmbeddingTable, kind: PairFeatures = "senteval"
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """SentEval's MRPC features [|u - v|, u * v] (``"senteval"``), or InferSent's [u, v, |u - v|, u * v]."""
    order = senteval_order([len(s.split()) for s in pairs.first], [len(s.split()) for s in pairs.second], pairs.labels)
    u, v = table[pairs.first][order], table[pairs.second][order]
    parts = [np.abs(u - v), u * v] if kind == "senteval" else [u, v, np.abs(u - v), u * v]
    return np.concatenate(parts, axis=1), np.asarray(pairs.labels, dtype=np.int64)[order]


def run_task(
    task: TransferTask, table: EmbeddingTable, config: ProbeConfig, pair_features: PairFeatures = "senteval"
) -> TaskResult:
    """Train and select probes for one loaded task on embeddings from ``table``."""
    start = time.perf_counter()
    f1: float | None = None
    result: ProbeResult
    if isinstance(task, BinaryTask):
        x, y = _sorted_split(task.data, table)
        result = nested_kfold(x, y, n_classes=task.n_classes, config=config)
        n_dev = n_test = len(task.data)
    elif isinstance(task, SST2Task):
        train, dev, test = (_sorted_split(s, table) for s in (task.train, task.dev, task.test))
        result = dev_selection(train, dev, test, n_classes=task.n_classes, config=config)
        n_dev, n_test = len(task.dev), len(task.test)
    elif isinstance(task, TRECTask):
        (x_train, y_train), (x_test, y_test) = (
            _sorted_split(task.train, table),
            _sorted_split(task.test, table),
        )
        result = kfold_then_fit(x_train, y_train, x_test, y_test, n_classes=task.n_classes, config=config)
        n_dev, n_test = len(task.train), len(task.test)
    else:
        (x_train, y_train), (x_test, y_test) = (
            _pair_features(task.train, table, pair_features),
            _pair_features(task.test, table, pair_features),
        )
        result = kfold_then_fit(x_train, y_train, x_test, y_test, n_classes=task.n_classes, config=config)
        assert result.predictions is not None
        f1 = round(100.0 * float(f1_score(y_test, result.predictions)), 2)
        n_dev, n_test = len(task.train), len(task.test)
    return TaskResult(
        task=task.name,
        dev_accuracy=result.dev_accuracy,
        test_accuracy=result.test_accuracy,
        test_f1=f1,
        n_dev=n_dev,
        n_test=n_test,
        l2regs=result.l2regs,
        seconds=time.perf_counter() - start,
    )


def evaluate_transfer(
    encode: Encoder,
    data_dir: Path,
    tasks: Sequence[str] = TRANSFER_TASKS,
    protocol: str = "fasttest",
    batch_size: int | None = 128,
    pair_features: PairFeatures = "senteval",
) -> TransferResults:
    """Run the SentEval transfer tasks on ``encode``.

    encode: list of sentences -> (n, dim) array; it receives each distinct sentence of all tasks
    exactly once, as SentEval's batcher builds it (tokens joined by single spaces), in length-sorted
    chunks of ``batch_size`` (one call with everything when None). data_dir: root of the data layout
    (holds ``transfer/``). tasks: SentEval names, reported in SimCSE's order. pair_features: MRPC's
    probe input, SentEval's ``[|u - v|, u * v]`` (what SimCSE's numbers use) or ``"full"``
    ``[u, v, |u - v|, u * v]``.
    """
    if pair_features not in ("senteval", "full"):
        raise CsrlError(f"unknown MRPC features {pair_features!r}", hint="use 'senteval' or 'full'")
    start = time.perf_counter()
    config = protocol_config(protocol)
    unknown = [t for t in tasks if t not in TRANSFER_TASKS]
    if unknown:
        raise CsrlError(f"unknown transfer task(s) {unknown}", hint=f"choose from {', '.join(TRANSFER_TASKS)}")
    loaded = [load_transfer_task(name, data_dir) for name in TRANSFER_TASKS if name in tasks]
    sentences = [s for task in loaded for s in task_sentences(task)]

    encode_start = time.perf_counter()
    table = EmbeddingTable(encode, sentences, batch_size)
    encode_seconds = time.perf_counter() - encode_start

    results = tuple(run_task(task, table, config, pair_features) for task in loaded)
    return TransferResults(
        protocol=protocol,
        tasks=results,
        n_sentences=len(sentences),
        n_encoded=len(table),
        encode_seconds=encode_seconds,
        probe_seconds=sum(r.seconds for r in results),
        total_seconds=time.perf_counter() - start,
    )
