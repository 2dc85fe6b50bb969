from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from csrl.data.transfer import (
    TRANSFER_TASKS,
    TREC_LABELS,
    BinaryTask,
    load_cr,
    load_mpqa,
    load_mr,
    load_mrpc,
    load_sst2,
    load_subj,
    load_transfer_task,
    load_trec,
)
from csrl.errors import CsrlError


def _real_data_dir() -> Path:
    value = os.environ.get("CSRL_DATA_DIR")
    if not value:
        pytest.skip("CSRL_DATA_DIR is not set; point it at the shared data layout to run real-data tests")
    path = Path(value)
    if not (path / "transfer").is_dir():
        pytest.skip(f"CSRL_DATA_DIR={value} has no transfer/ folder")
    return path


def _write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------- real data (counts of the data README)


@pytest.mark.parametrize(
    ("loader", "n_pos", "n_neg"),
    [(load_mr, 5331, 5331), (load_cr, 2407, 1368), (load_subj, 5000, 5000), (load_mpqa, 3312, 7294)],
)
def test_binary_counts(loader: Callable[[Path], BinaryTask], n_pos: int, n_neg: int) -> None:
    task = loader(_real_data_dir())
    assert len(task.data) == n_pos + n_neg
    assert task.data.labels == (1,) * n_pos + (0,) * n_neg


def test_split_counts() -> None:
    data_dir = _real_data_dir()
    sst = load_sst2(data_dir)
    assert (len(sst.train), len(sst.dev), len(sst.test)) == (67349, 872, 1821)
    assert set(sst.train.labels) == {0, 1}
    trec = load_trec(data_dir)
    assert (len(trec.train), len(trec.test)) == (5452, 500)
    counts = {label: trec.train.labels.count(i) for i, label in enumerate(TREC_LABELS)}
    assert counts == {"ABBR": 86, "DESC": 1162, "ENTY": 1250, "HUM": 1223, "LOC": 835, "NUM": 896}
    mrpc = load_mrpc(data_dir)
    assert (len(mrpc.train), len(mrpc.test)) == (4076, 1725)


def test_real_parsing_details() -> None:
    data_dir = _real_data_dir()
    # Blank lines are samples, as in SentEval (CR has 4, MPQA 3).
    assert load_cr(data_dir).data.sentences.count("") == 4
    assert load_mpqa(data_dir).data.sentences.count("") == 3
    # TREC is latin-1: its one non-ASCII byte (0xf0) becomes 'ð'; the fine label is dropped.
    trec = load_trec(data_dir)
    assert trec.train.sentences[0] == "How did serfdom develop in and then leave Russia ?"
    assert trec.train.labels[0] == TREC_LABELS.index("DESC")
    assert sum("ð" in s for s in trec.train.sentences) == 1
    # SST-2: the tab and trailing space are not part of the sentence.
    sst = load_sst2(data_dir)
    assert sst.train.sentences[0] == "hide new secretions from the parental units"
    assert sst.train.labels[0] == 0
    # MRPC: header skipped, label first, sentences in columns 4 and 5.
    mrpc = load_mrpc(data_dir)
    assert mrpc.train.labels[:2] == (1, 0)
    assert mrpc.train.first[0].startswith("Amrozi accused his brother")
    assert mrpc.train.second[0].startswith("Referring to him as only")


def test_load_transfer_task_names() -> None:
    data_dir = _real_data_dir()
    for name in TRANSFER_TASKS:
        assert load_transfer_task(name, data_dir).name == name


# ---------------------------------------------------------------- parsing on small files


def test_binary_parsing_matches_senteval(tmp_path: Path) -> None:
    folder = tmp_path / "transfer" / "SUBJ"
    # latin-1 bytes, tabs and repeated spaces, a blank line; splitlines() also splits on \x0c.
    _write(folder / "subj.objective", b"caf\xe9  au\tlait \n\nform\x0cfeed\n")
    _write(folder / "subj.subjective", b"a  b\n")
    task = load_subj(tmp_path)
    assert isinstance(task, BinaryTask)
    assert task.data.sentences == ("café au lait", "", "form", "feed", "a b")
    assert task.data.labels == (1, 1, 1, 1, 0)  # objective is SentEval's "pos"


def test_trec_parsing(tmp_path: Path) -> None:
    folder = tmp_path / "transfer" / "TREC"
    _write(folder / "train_5500.label", "NUM:date When  was it ?\nHUM:ind Who is he ?\n")
    _write(folder / "TREC_10.label", "LOC:city Where ?\n")
    task = load_trec(tmp_path)
    assert task.train.sentences == ("When was it ?", "Who is he ?")
    assert task.train.labels == (TREC_LABELS.index("NUM"), TREC_LABELS.index("HUM"))
    assert task.test.labels == (TREC_LABELS.index("LOC"),)


def _mrpc_files(tmp_path: Path, train_body: str) -> None:
    folder = tmp_path / "transfer" / "MRPC"
    header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    _write(folder / "msr_paraphrase_train.txt", header + train_body)
    _write(folder / "msr_paraphrase_test.txt", header + "0\t1\t2\tx y\tz\n")


def test_mrpc_parsing(tmp_path: Path) -> None:
    _mrpc_files(tmp_path, "1\t10\t11\tA  cat .\tThe cat .\n0\t12\t13\tB\tC\n")
    task = load_mrpc(tmp_path)
    assert task.train.first == ("A cat .", "B")
    assert task.train.second == ("The cat .", "C")
    assert task.train.labels == (1, 0)
    assert task.test.labels == (0,)


# ---------------------------------------------------------------- errors


def _sst_files(tmp_path: Path, train: str) -> None:
    folder = tmp_path / "transfer" / "SST" / "binary"
    _write(folder / "sentiment-train", train)
    _write(folder / "sentiment-dev", "ok\t1\n")
    _write(folder / "sentiment-test", "ok\t0\n")


@pytest.mark.parametrize(
    ("body", "line", "problem"),
    [
        ("good\t1\nbad 0\n", 2, "expected 2 tab-separated fields, found 1"),
        ("good\t1\nfine\t1\nbad\t2\n", 3, "label '2' is not 0 or 1"),
    ],
)
def test_sst_malformed(tmp_path: Path, body: str, line: int, problem: str) -> None:
    _sst_files(tmp_path, body)
    with pytest.raises(CsrlError) as info:
        load_sst2(tmp_path)
    message = str(info.value)
    assert f"sentiment-train, line {line}: {problem}" in message
    assert "fix or delete that line" in message


@pytest.mark.parametrize(
    ("line_text", "problem"),
    [
        ("FOO:bar What ?", "unknown coarse label 'FOO'"),
        ("no colon here", "no ':' after the coarse label"),
        ("NUM:date", "no space between the fine label and the question"),
    ],
)
def test_trec_malformed(tmp_path: Path, line_text: str, problem: str) -> None:
    folder = tmp_path / "transfer" / "TREC"
    _write(folder / "train_5500.label", f"NUM:date When ?\n{line_text}\n")
    _write(folder / "TREC_10.label", "LOC:city Where ?\n")
    with pytest.raises(CsrlError, match=f"train_5500.label, line 2: {problem}") as info:
        load_trec(tmp_path)
    assert "ABBR, DESC, ENTY, HUM, LOC, NUM" in str(info.value)


def test_mrpc_malformed(tmp_path: Path) -> None:
    _mrpc_files(tmp_path, "1\t10\t11\tA\tB\n1\t10\t11\tonly one sentence\n")
    with pytest.raises(CsrlError, match="msr_paraphrase_train.txt, line 3: expected 5 tab-separated fields"):
        load_mrpc(tmp_path)
    _mrpc_files(tmp_path, "yes\t10\t11\tA\tB\n")
    with pytest.raises(CsrlError, match="line 2: label 'yes' is not 0 or 1"):
        load_mrpc(tmp_path)


def test_missing_data(tmp_path: Path) -> None:
    with pytest.raises(CsrlError) as info:
        load_mr(tmp_path / "nowhere")
    message = str(info.value)
    assert "does not exist" in message and "CSRL_DATA_DIR" in message and "--data-dir" in message
    assert "csrl data fetch" in message
    with pytest.raises(CsrlError, match="transfer task folder"):
        load_mr(tmp_path)
    _write(tmp_path / "transfer" / "MR" / "rt-polarity.pos", "good\n")
    with pytest.raises(CsrlError, match="rt-polarity.neg does not exist"):
        load_mr(tmp_path)
    with pytest.raises(CsrlError, match="unknown transfer task 'SST5'"):
        load_transfer_task("SST5", tmp_path)
