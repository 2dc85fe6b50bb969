"""SentEval transfer tasks: MR, CR, SUBJ, MPQA, SST-2, TREC and MRPC.

Each loader reads the files of one task from ``<data_dir>/transfer/<TASK>/`` (SentEval's layout and file
names) and parses them exactly as SentEval does, so the encoder sees the same strings:

* a sentence is ``line.split()`` (any Unicode whitespace) re-joined with single spaces, which is the
  ``' '.join(s)`` string SimCSE's batcher hands to the tokenizer;
* MR, CR, SUBJ, MPQA and TREC are decoded as latin-1 (never fails; the one non-ASCII byte of TREC's
  train file becomes ``'ð'`` as in SentEval), SST and MRPC as UTF-8;
* MR, CR, SUBJ and MPQA keep every line given by ``str.splitlines()``, blank lines included: CR has 4
  and MPQA 3 blank lines, which SentEval embeds as empty sentences and counts in the standard sizes;
* SUBJ labels *objective* sentences 1 and *subjective* ones 0 (SentEval passes the objective file as
  its ``pos`` argument);
* SST-2 lines are ``<sentence>\\t<label>``; TREC lines are ``<COARSE>:<fine> <question>`` and only the
  coarse label is kept; MRPC lines are ``<label>\\t<id>\\t<id>\\t<s1>\\t<s2>`` after one header line.

The loaders return the samples in file order. SentEval's own order (sorted by length before
embedding) matters for its folds and is applied by :mod:`csrl.evaluate.transfer`. Malformed lines
raise :class:`~csrl.errors.CsrlError` naming file, line and fix; SentEval would crash or assert.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from csrl.errors import CsrlError

TRANSFER_TASKS: tuple[str, ...] = ("MR", "CR", "SUBJ", "MPQA", "SST2", "TREC", "MRPC")
TREC_LABELS: tuple[str, ...] = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")

_DATA_HINT = (
    "set CSRL_DATA_DIR or pass --data-dir to the root of the data layout (the folder that holds "
    "transfer/), or run `csrl data fetch`"
)


@dataclass(frozen=True)
class LabeledSentences:
    """Sentences as the encoder sees them (tokens joined by one space) with integer labels."""

    sentences: tuple[str, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.sentences) != len(self.labels):
            raise ValueError(f"{len(self.sentences)} sentences but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class LabeledPairs:
    """Sentence pairs (``first[i]``, ``second[i]``) with integer labels."""

    first: tuple[str, ...]
    second: tuple[str, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if not len(self.first) == len(self.second) == len(self.labels):
            raise ValueError(f"{len(self.first)} first, {len(self.second)} second sentences, {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class BinaryTask:
    """MR, CR, SUBJ or MPQA: one labelled pool, evaluated by nested k-fold cross-validation."""

    name: str
    data: LabeledSentences
    n_classes: int = 2


@dataclass(frozen=True)
class SST2Task:
    """SST-2: fixed train/dev/test splits; dev selects the L2 penalty and stops training early."""

    train: LabeledSentences
    dev: LabeledSentences
    test: LabeledSentences
    name: str = "SST2"
    n_classes: int = 2


@dataclass(frozen=True)
class TRECTask:
    """TREC coarse question types (labels index :data:`TREC_LABELS`): train/test, k-fold on train."""

    train: LabeledSentences
    test: LabeledSentences
    name: str = "TREC"
    n_classes: int = 6


@dataclass(frozen=True)
class MRPCTask:
    """MRPC paraphrase pairs (1 = paraphrase): train/test, k-fold on train."""

    train: LabeledPairs
    test: LabeledPairs
    name: str = "MRPC"
    n_classes: int = 2


TransferTask = BinaryTask | SST2Task | TRECTask | MRPCTask


def task_dir(data_dir: Path, name: str) -> Path:
    """``<data_dir>/transfer/<name>``; raises CsrlError if the data root or the folder is missing."""
    if not data_dir.is_dir():
        raise CsrlError(f"data directory {data_dir} does not exist", hint=_DATA_HINT)
    folder = data_dir / "transfer" / name
    if not folder.is_dir():
        raise CsrlError(f"transfer task folder {folder} does not exist", hint=_DATA_HINT)
    return folder


def _read_text(path: Path, encoding: str) -> str:
    if not path.is_file():
        raise CsrlError(f"data file {path} does not exist", hint=_DATA_HINT)
    # Default newline handling (universal newlines), as SentEval's io.open(fpath, 'r', encoding=...).
    with path.open("r", encoding=encoding) as f:
        return f.read()


def _malformed(path: Path, number: int, problem: str, expected: str) -> CsrlError:
    return CsrlError(
        f"{path}, line {number}: {problem}",
        hint=f"each line must be {expected}; fix or delete that line, or restore the original file",
    )


def _sentence(raw: str) -> str:
    return " ".join(raw.split())


def _load_pool(path: Path) -> tuple[str, ...]:
    """One sentence per ``str.splitlines()`` line, latin-1, blank lines kept (SentEval ``loadFile``)."""
    return tuple(_sentence(line) for line in _read_text(path, "latin-1").splitlines())


def _load_binary(data_dir: Path, name: str, positive: str, negative: str) -> BinaryTask:
    folder = task_dir(data_dir, name)
    pos, neg = _load_pool(folder / positive), _load_pool(folder / negative)
    data = LabeledSentences(pos + neg, (1,) * len(pos) + (0,) * len(neg))
    return BinaryTask(name=name, data=data)


def load_mr(data_dir: Path) -> BinaryTask:
    """MR movie-review polarity: ``rt-polarity.pos`` (1), ``rt-polarity.neg`` (0); 5331 + 5331."""
    return _load_binary(data_dir, "MR", "rt-polarity.pos", "rt-polarity.neg")


def load_cr(data_dir: Path) -> BinaryTask:
    """CR product-review polarity: ``custrev.pos`` (1), ``custrev.neg`` (0); 2407 + 1368."""
    return _load_binary(data_dir, "CR", "custrev.pos", "custrev.neg")


def load_subj(data_dir: Path) -> BinaryTask:
    """SUBJ: ``subj.objective`` (label 1, as in SentEval), ``subj.subjective`` (0); 5000 + 5000."""
    return _load_binary(data_dir, "SUBJ", "subj.objective", "subj.subjective")


def load_mpqa(data_dir: Path) -> BinaryTask:
    """MPQA opinion polarity: ``mpqa.pos`` (1), ``mpqa.neg`` (0); 3312 + 7294."""
    return _load_binary(data_dir, "MPQA", "mpqa.pos", "mpqa.neg")


def _file_lines(path: Path, encoding: str) -> list[tuple[int, str]]:
    """Lines as ``for line in f`` yields them (no trailing empty line), numbered from 1."""
    lines = _read_text(path, encoding).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return list(enumerate(lines, start=1))


def _load_sst_split(path: Path) -> LabeledSentences:
    expected = "'<sentence><TAB><0 or 1>'"
    sentences: list[str] = []
    labels: list[int] = []
    for number, line in _file_lines(path, "utf-8"):
        fields = line.strip().split("\t")
        if len(fields) != 2:
            raise _malformed(path, number, f"expected 2 tab-separated fields, found {len(fields)}", expected)
        if fields[1] not in ("0", "1"):
            raise _malformed(path, number, f"label {fields[1]!r} is not 0 or 1", expected)
        sentences.append(_sentence(fields[0]))
        labels.append(int(fields[1]))
    return LabeledSentences(tuple(sentences), tuple(labels))


def load_sst2(data_dir: Path) -> SST2Task:
    """SST-2 from ``SST/binary/sentiment-{train,dev,test}``: 67349 / 872 / 1821 (train holds phrases)."""
    folder = task_dir(data_dir, "SST") / "binary"
    return SST2Task(
        train=_load_sst_split(folder / "sentiment-train"),
        dev=_load_sst_split(folder / "sentiment-dev"),
        test=_load_sst_split(folder / "sentiment-test"),
    )


def _load_trec_split(path: Path) -> LabeledSentences:
    expected = f"'<COARSE>:<fine> <question>' with COARSE one of {', '.join(TREC_LABELS)}"
    index = {label: i for i, label in enumerate(TREC_LABELS)}
    sentences: list[str] = []
    labels: list[int] = []
    for number, line in _file_lines(path, "latin-1"):
        coarse, colon, rest = line.strip().partition(":")
        if not colon:
            raise _malformed(path, number, "no ':' after the coarse label", expected)
        if coarse not in index:
            raise _malformed(path, number, f"unknown coarse label {coarse!r}", expected)
        fine, space, question = rest.partition(" ")
        if not space:
            raise _malformed(path, number, "no space between the fine label and the question", expected)
        sentences.append(_sentence(question))
        labels.append(index[coarse])
    return LabeledSentences(tuple(sentences), tuple(labels))


def load_trec(data_dir: Path) -> TRECTask:
    """TREC from ``train_5500.label`` (5452) and ``TREC_10.label`` (500); 6 coarse classes."""
    folder = task_dir(data_dir, "TREC")
    return TRECTask(
        train=_load_trec_split(folder / "train_5500.label"),
        test=_load_trec_split(folder / "TREC_10.label"),
    )


def _load_mrpc_split(path: Path) -> LabeledPairs:
    expected = "'<0 or 1><TAB><id><TAB><id><TAB><sentence 1><TAB><sentence 2>' after one header line"
    first: list[str] = []
    second: list[str] = []
    labels: list[int] = []
    for number, line in _file_lines(path, "utf-8")[1:]:  # line 1 is the header
        fields = line.strip().split("\t")
        if len(fields) != 5:
            raise _malformed(path, number, f"expected 5 tab-separated fields, found {len(fields)}", expected)
        if fields[0] not in ("0", "1"):
            raise _malformed(path, number, f"label {fields[0]!r} is not 0 or 1", expected)
        first.append(_sentence(fields[3]))
        second.append(_sentence(fields[4]))
        labels.append(int(fields[0]))
    return LabeledPairs(tuple(first), tuple(second), tuple(labels))


def load_mrpc(data_dir: Path) -> MRPCTask:
    """MRPC from ``msr_paraphrase_{train,test}.txt``: 4076 / 1725 pairs (header lines skipped)."""
    folder = task_dir(data_dir, "MRPC")
    return MRPCTask(
        train=_load_mrpc_split(folder / "msr_paraphrase_train.txt"),
        test=_load_mrpc_split(folder / "msr_paraphrase_test.txt"),
    )


LOADERS: dict[str, Callable[[Path], TransferTask]] = {
    "MR": load_mr,
    "CR": load_cr,
    "SUBJ": load_subj,
    "MPQA": load_mpqa,
    "SST2": load_sst2,
    "TREC": load_trec,
    "MRPC": load_mrpc,
}


def load_transfer_task(name: str, data_dir: Path) -> TransferTask:
    """Load one task by its SentEval name (one of :data:`TRANSFER_TASKS`)."""
    if name not in LOADERS:
        raise CsrlError(f"unknown transfer task {name!r}", hint=f"choose from {', '.join(TRANSFER_TASKS)}")
    return LOADERS[name](data_dir)
