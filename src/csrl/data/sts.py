"""STS loaders for the SentEval on-disk layout (papers.md 3.2), returning typed pair sets.

Exact rules of the SentEval fork that SimCSE evaluates with:

- STS12-16: for each ``STS.input.<name>.txt`` (inputs are enumerated, never gold files: STS13's SMT gold
  file has no input), the gold file ``STS.gs.<name>.txt``; both are split with ``str.splitlines``; lines
  whose gold score is empty are dropped.
- STS-B: ``sts-{train,dev,test}.csv``, each line stripped and split on tabs; gold = field 5, sentences =
  fields 6 and 7 (1-based); extra fields are ignored.
- SICK-R: ``SICK_{train,trial,test_annotated}.txt``, header skipped, fields 2, 3, 4 (1-based).
- Every sentence is split on whitespace and re-joined with single spaces.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csrl.errors import CsrlError

STS_TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
TASK_ALIASES = {
    "sts12": "STS12", "sts13": "STS13", "sts14": "STS14", "sts15": "STS15", "sts16": "STS16",
    "stsb": "STSBenchmark", "sts-b": "STSBenchmark", "stsbenchmark": "STSBenchmark",
    "sickr": "SICKRelatedness", "sick-r": "SICKRelatedness", "sickrelatedness": "SICKRelatedness",
}  # fmt: skip
SHORT_NAMES = {
    "STS12": "STS12", "STS13": "STS13", "STS14": "STS14", "STS15": "STS15", "STS16": "STS16",
    "STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R",
}  # fmt: skip
_FOLDERS = {
    "STS12": "sts/sts12", "STS13": "sts/sts13", "STS14": "sts/sts14", "STS15": "sts/sts15",
    "STS16": "sts/sts16", "STSBenchmark": "sts/stsb", "SICKRelatedness": "sts/sickr",
}  # fmt: skip
_SPLIT_FILES = {
    "STSBenchmark": {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"},
    "SICKRelatedness": {
        "train": "SICK_train.txt",
        "dev": "SICK_trial.txt",
        "test": "SICK_test_annotated.txt",
    },
}


@dataclass(frozen=True)
class STSPairs:
    """One scored sub-dataset: sentence pairs and gold similarity scores."""

    name: str
    sentences1: tuple[str, ...]
    sentences2: tuple[str, ...]
    scores: np.ndarray  # float64, one per pair

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class STSTask:
    """A task (``STS12`` ... ``SICKRelatedness``) made of named sub-datasets."""

    name: str
    subsets: tuple[STSPairs, ...]

    @property
    def short_name(self) -> str:
        return SHORT_NAMES.get(self.name, self.name)

    def sentences(self) -> list[str]:
        return [s for p in self.subsets for s in (*p.sentences1, *p.sentences2)]


def canonical_task(name: str) -> str:
    if name in STS_TASKS:
        return name
    key = name.lower()
    if key in TASK_ALIASES:
        return TASK_ALIASES[key]
    raise CsrlError(f"unknown STS task {name!r}", hint=f"valid tasks: {', '.join(STS_TASKS)} (or sts12, stsb, sickr)")


def default_data_dir() -> Path:
    """The user cache folder ``~/.cache/csrl/data``: where library calls look when given no data folder.

    The library never reads the environment; the CLI resolves ``--data-dir``, then ``$CSRL_DATA_DIR``
    (then ``$XDG_CACHE_HOME/csrl/data``) and passes the folder down.
    """
    return Path.home() / ".cache" / "csrl" / "data"


def missing_data_error(path: Path, what: str) -> CsrlError:
    return CsrlError(
        f"{what} not found: {path}",
        hint="point csrl at the data with CSRL_DATA_DIR=/path/to/data (or --data-dir), "
        "or download the standard sets with `csrl data fetch`",
    )


def _normalise(sentence: str) -> str:
    return " ".join(sentence.split())


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise missing_data_error(path, "STS file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise CsrlError(
            f"{path}:{line}: bytes that are not UTF-8 ({exc.reason} at byte {exc.start})",
            hint="re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8",
        ) from None


def _parse_score(raw: str, path: Path, line: int) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise CsrlError(
            f"{path}:{line}: gold score {raw!r} is not a number",
            hint="each gold line holds one number (or is empty for an unscored pair)",
        ) from None
    if not np.isfinite(value):
        raise CsrlError(f"{path}:{line}: gold score {raw!r} is not finite")
    return value


def load_sts_year(folder: Path, task: str) -> STSTask:
    """STS12-16: every ``STS.input.<name>.txt`` with its ``STS.gs.<name>.txt``."""
    if not folder.is_dir():
        raise missing_data_error(folder, f"{task} folder")
    inputs = sorted(folder.glob("STS.input.*.txt"))
    if not inputs:
        raise missing_data_error(folder / "STS.input.*.txt", f"{task} input files")
    subsets = []
    for inp in inputs:
        name = inp.name[len("STS.input.") : -len(".txt")]
        gs = folder / f"STS.gs.{name}.txt"
        lines = _read_text(inp).splitlines()
        gold = _read_text(gs).splitlines()
        if len(lines) != len(gold):
            raise CsrlError(
                f"{inp}: {len(lines)} input lines but {gs.name} has {len(gold)} gold lines",
                hint="input and gold files must be line-aligned (one gold line, possibly empty, per pair)",
            )
        s1, s2, scores = [], [], []
        for k, (line, g) in enumerate(zip(lines, gold, strict=True), start=1):
            if g == "":
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise CsrlError(
                    f"{inp}:{k}: expected 2 tab-separated sentences, found {len(fields)} field(s)",
                    hint="each line must be `sentence1<TAB>sentence2`",
                )
            s1.append(_normalise(fields[0]))
            s2.append(_normalise(fields[1]))
            scores.append(_parse_score(g, gs, k))
        subsets.append(STSPairs(name, tuple(s1), tuple(s2), np.asarray(scores, dtype=np.float64)))
    return STSTask(task, tuple(subsets))


def _load_columns(path: Path, cols: tuple[int, int, int], *, header: bool) -> STSPairs:
    text = _read_text(path)
    s1, s2, scores = [], [], []
    for k, line in enumerate(text.split("\n"), start=1):
        if header and k == 1:
            continue
        if line == "" and k == text.count("\n") + 1:
            break  # the end of the file
        fields = line.strip().split("\t")
        if len(fields) <= max(cols):
            raise CsrlError(
                f"{path}:{k}: expected at least {max(cols) + 1} tab-separated fields, found {len(fields)}",
                hint="this file must keep the SentEval column layout (see papers.md 3.2)",
            )
        scores.append(_parse_score(fields[cols[0]], path, k))
        s1.append(_normalise(fields[cols[1]]))
        s2.append(_normalise(fields[cols[2]]))
    return STSPairs(path.stem, tuple(s1), tuple(s2), np.asarray(scores, dtype=np.float64))


def load_sts_task(name: str, data_dir: Path | None = None, *, split: str = "test") -> STSTask:
    """Load one task from the SentEval layout under ``data_dir`` (default: :func:`default_data_dir`)."""
    task = canonical_task(name)
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if not root.is_dir():
        raise missing_data_error(root, "data folder")
    folder = root / _FOLDERS[task]
    if task not in _SPLIT_FILES:
        return load_sts_year(folder, task)
    if split not in _SPLIT_FILES[task]:
        raise CsrlError(f"unknown split {split!r} for {task}", hint="valid splits: train, dev, test")
    path = folder / _SPLIT_FILES[task][split]
    if task == "STSBenchmark":
        pairs = _load_columns(path, (4, 5, 6), header=False)
    else:
        pairs = _load_columns(path, (3, 1, 2), header=True)
    return STSTask(task, (STSPairs(split, pairs.sentences1, pairs.sentences2, pairs.scores),))


def _task_files(root: Path, need: str) -> list[Path]:
    """The files ``need`` (``task[:split]``) reads; a folder of STS12-16 without inputs gives its input pattern."""
    name, _, split = need.partition(":")
    task = canonical_task(name)
    folder = root / _FOLDERS[task]
    if task in _SPLIT_FILES:
        split = split or "test"
        if split not in _SPLIT_FILES[task]:
            raise CsrlError(f"unknown split {split!r} for {task}", hint="valid splits: train, dev, test")
        return [folder / _SPLIT_FILES[task][split]]
    inputs = sorted(folder.glob("STS.input.*.txt")) if folder.is_dir() else []
    gold = [folder / inp.name.replace("STS.input.", "STS.gs.", 1) for inp in inputs]
    return [*inputs, *gold] if inputs else [folder / "STS.input.*.txt"]


def check_sts_files(data_dir: Path | None, needs: Iterable[str]) -> None:
    """Check that the files a job will read exist, by stat only (fast), so a missing one fails before any model
    loads or any step runs, rather than at the first evaluation.

    ``needs``: task names or aliases (``STS12`` ... ``SICKRelatedness``, ``stsb``), each with an optional split
    (``"stsb:dev"``; default ``test``), and ``"analysis"`` (paper A's analysis sentences: the raw STS-B test
    file, or SentEval's copy). Raises the loaders' missing-data error, naming the missing files.
    """
    needs = set(needs)
    if not needs:
        return
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if not root.is_dir():
        raise missing_data_error(root, "data folder")
    missing: list[Path] = []
    for need in sorted(needs):
        if need == "analysis":
            raw = root / "sts" / "stsb" / "raw" / "sts-test.csv"
            if not raw.is_file() and not (root / _FOLDERS["STSBenchmark"] / "sts-test.csv").is_file():
                missing.append(raw)
            continue
        missing += [f for f in _task_files(root, need) if not f.is_file()]
    if missing:
        shown = ", ".join(map(str, missing[:3])) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        first = missing_data_error(missing[0], "STS file")
        raise CsrlError(f"STS file{'s' if len(missing) > 1 else ''} not found: {shown}", hint=first.hint)


def load_sts_suite(data_dir: Path | None = None, tasks: Sequence[str] = STS_TASKS) -> list[STSTask]:
    return [load_sts_task(t, data_dir) for t in tasks]


def load_analysis_sentences(data_dir: Path | None = None, limit: int | None = None) -> list[str]:
    """Paper A's analysis sentences: STS-B test ``sentence1`` from the original (cased) release.

    ``sts/stsb/raw/sts-test.csv``, column 6 (1-based), parsed by position (some lines have extra fields).
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    path = root / "sts" / "stsb" / "raw" / "sts-test.csv"
    text = _read_text(path)
    out = []
    for k, line in enumerate(text.splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 7:
            raise CsrlError(f"{path}:{k}: expected at least 7 tab-separated fields, found {len(fields)}")
        out.append(fields[5])
    return out[:limit] if limit is not None else out


POSITIVE_THRESHOLD = 4.0  # STS-B gold score above which a pair counts as positive (SimCSE, Fig. 2)


def load_positive_pairs(
    data_dir: Path | None = None, threshold: float = POSITIVE_THRESHOLD
) -> tuple[list[str], list[str]]:
    """STS-B test pairs with a gold score above ``threshold``: the positives of the alignment metric."""
    pairs = load_sts_task("stsb", data_dir, split="test").subsets[0]
    keep = [i for i, g in enumerate(pairs.scores) if g > threshold]
    return [pairs.sentences1[i] for i in keep], [pairs.sentences2[i] for i in keep]


def load_sts_from_hub(task: str, *, repo_id: str | None = None, split: str = "test") -> STSTask:
    """The same sets from the Hugging Face Hub (the MTEB copies) or a local ``datasets`` folder.

    Online users get e.g. ``mteb/sts12-sts``; columns ``sentence1``, ``sentence2``, ``score``. MTEB keeps no
    sub-dataset names, so the task has a single subset named after the split.
    """
    task = canonical_task(task)
    mteb = {
        "STS12": "mteb/sts12-sts", "STS13": "mteb/sts13-sts", "STS14": "mteb/sts14-sts",
        "STS15": "mteb/sts15-sts", "STS16": "mteb/sts16-sts", "STSBenchmark": "mteb/stsbenchmark-sts",
        "SICKRelatedness": "mteb/sickr-sts",
    }  # fmt: skip
    try:
        import datasets
    except ImportError:
        raise CsrlError("loading from the Hub needs the `datasets` package", hint="pip install datasets") from None
    try:
        ds = datasets.load_dataset(repo_id or mteb[task], split=split)
    except Exception as exc:  # network, missing repo, bad folder: all user-fixable
        raise CsrlError(
            f"could not load {repo_id or mteb[task]!r} ({type(exc).__name__}: {str(exc).splitlines()[0]})",
            hint="check the network or pass a local folder; offline, use CSRL_DATA_DIR with the SentEval layout",
        ) from None
    s1 = tuple(_normalise(s) for s in ds["sentence1"])
    s2 = tuple(_normalise(s) for s in ds["sentence2"])
    return STSTask(task, (STSPairs(split, s1, s2, np.asarray(ds["score"], dtype=np.float64)),))
