"""Scored sentence pairs (sentence1, sentence2, gold score): the training data of CoSENT and AnglE on STS-B.

Two layouts (:func:`open_scored_pairs`; the trainer picks one from the run's ``data`` settings):

* ``data.format=stsb``: SentEval's STS-Benchmark files (``sts/stsb/sts-{train,dev,test}.csv`` of the data folder):
  no header, tab-separated, exactly 7 fields per line: genre, source file, year, id, gold score, sentence1,
  sentence2; the score (0-5) is field 5 (1-based). Sentences are whitespace-normalised, as the evaluation reads them
  (:mod:`csrl.data.sts`). A final newline ends the last line; an empty line is an error.
* ``data.scored_pairs=true`` with a CSV, TSV or JSONL corpus (:func:`csrl.data.corpora.open_corpus`, with all of its
  checks): the selected fields (``data.columns``; by default every header column) must be three, (sentence1,
  sentence2, score), the score a number written as text (JSONL: ``"score": "4.2"``: the corpus reader takes string
  fields only).

Every score is checked when the corpus opens: a score that is not a finite number, a wrong field count and an empty
sentence are errors naming the file and line. Only the order of the scores matters to CoSENT and AnglE's ranking
terms (any scale); AnglE's in-batch term takes the pairs with a score >= its ``positive_score`` as positives.

Records are (sentence1, sentence2, score) strings, as every corpus hands them to the trainer
(:class:`csrl.data.corpora.CorpusLike`); :func:`record_score` reads the score back. Datasets (Parquet files,
dataset folders, Hub ids) are not read as scored pairs (convert them to CSV).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from csrl.data.corpora import Corpus, CorpusLike, open_corpus, read_lines
from csrl.errors import CsrlError

SCORED_FIELDS = ("sentence1", "sentence2", "score")
STSB_FIELDS = ("genre", "file", "year", "id", "score", "sentence1", "sentence2")
SCORED_FORMATS = ("stsb",)  # data.format values that are scored-pair layouts (beyond the corpus formats)


def _is_score(raw: str) -> bool:
    try:
        return math.isfinite(float(raw))
    except ValueError:
        return False


def _bad_score(where: str, column: str, raw: str) -> CsrlError:
    return CsrlError(
        f"{where}: the gold score ({column}) {raw!r} is not a finite number",
        hint="each scored pair needs a numeric similarity score, e.g. 3.8 (STS-B: 0 to 5); fix or remove the line",
    )


def record_score(record: Sequence[str]) -> float:
    """The gold score of a scored-pair record (checked when its corpus was opened)."""
    return float(record[2])


class ScoredPairs:
    """Scored pairs held in memory (the STS-B layout: a few thousand pairs); a :class:`CorpusLike`."""

    fields: tuple[str, ...] = SCORED_FIELDS

    def __init__(self, records: Sequence[tuple[str, str, str]], paths: Sequence[Path]) -> None:
        self._records = list(records)
        self.paths = tuple(paths)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"ScoredPairs({len(self)} pairs, files={[str(p) for p in self.paths]})"

    def get(self, i: int) -> tuple[str, ...]:
        return self._records[i]

    __getitem__ = get

    def get_many(self, indices: Sequence[int] | np.ndarray) -> list[tuple[str, ...]]:
        return [self._records[int(i)] for i in indices]

    def record_bytes(self) -> np.ndarray:
        """UTF-8 length of the two sentences of every pair (a proxy for its token count, for length grouping)."""
        return np.asarray([len(a.encode()) + len(b.encode()) + 1 for a, b, _ in self._records], dtype=np.int64)


def read_stsb_pairs(path: Path) -> list[tuple[str, str, str]]:
    """(sentence1, sentence2, score) of every line of a SentEval STS-B file (module doc), all checked."""
    out: list[tuple[str, str, str]] = []
    for k, line in enumerate(read_lines(path, what="STS-B file"), start=1):
        fields = line.split("\t")
        if len(fields) != len(STSB_FIELDS):
            raise CsrlError(
                f"{path}:{k}: expected {len(STSB_FIELDS)} tab-separated fields ({', '.join(STSB_FIELDS)}), "
                f"found {len(fields)}",
                hint="data.format=stsb reads SentEval's STS-B layout (sts/stsb/sts-train.csv); for a file of "
                "(sentence1, sentence2, score) columns use data.format=csv/tsv with data.scored_pairs=true",
            )
        score = fields[4].strip()
        if not _is_score(score):
            raise _bad_score(f"{path}:{k}", "field 5", fields[4])
        s1, s2 = " ".join(fields[5].split()), " ".join(fields[6].split())
        if not s1 or not s2:
            raise CsrlError(f"{path}:{k}: sentence{1 if not s1 else 2} is empty", hint="fix or remove the line")
        out.append((s1, s2, score))
    if not out:
        raise CsrlError(f"{path}: no scored pairs (the file is empty)", hint="point data.train_files at STS-B train")
    return out


def check_scored_corpus(corpus: Corpus) -> None:
    """Three fields, and a finite number in the third of every record (errors name file and line)."""
    if len(corpus.fields) != 3:
        raise CsrlError(
            f"scored pairs need 3 fields (sentence1, sentence2, score), the corpus yields {len(corpus.fields)}: "
            f"{corpus.fields}",
            hint="choose them with data.columns=[sentence1,sentence2,score] (your column names, the score last)",
        )
    for i in range(len(corpus)):
        raw = corpus.get(i)[2]
        if not _is_score(raw):
            path, line = corpus.location(i)
            raise _bad_score(f"{path}:{line}", f"field {corpus.fields[2]!r}", raw)


def open_scored_pairs(paths: Sequence[Path], *, fmt: str = "auto", columns: Sequence[str] | None = None) -> CorpusLike:
    """The scored pairs of ``paths`` (concatenated in order): SentEval's STS-B layout for ``fmt="stsb"``, else a
    CSV/TSV/JSONL corpus whose selected fields are (sentence1, sentence2, score) (module doc)."""
    if not paths:
        raise CsrlError("no scored-pair files given", hint="set data.train_files")
    for p in paths:
        if not Path(p).is_file():
            raise CsrlError(
                f"scored pairs are read from files; {p} is not one",
                hint="give CSV/TSV/JSONL files, or SentEval's STS-B files with data.format=stsb (convert datasets "
                "to CSV, e.g. Dataset.to_csv)",
            )
    if fmt == "stsb":
        if columns is not None:
            raise CsrlError(
                "data.columns does not apply to data.format=stsb (its columns are fixed)", hint="data.columns=null"
            )
        return ScoredPairs([r for p in paths for r in read_stsb_pairs(Path(p))], [Path(p) for p in paths])
    corpus = open_corpus(list(paths), fmt=fmt, columns=columns)  # type: ignore[arg-type]
    check_scored_corpus(corpus)
    return corpus


__all__ = [
    "SCORED_FIELDS", "SCORED_FORMATS", "ScoredPairs", "check_scored_corpus", "open_scored_pairs", "read_stsb_pairs",
    "record_score",
]  # fmt: skip
