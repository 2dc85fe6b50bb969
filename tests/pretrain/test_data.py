"""The pretraining corpus: the held-out split, a cut last line, evaluation text kept out, sequences."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from csrl.errors import CsrlError
from csrl.pretrain.config import load_pretrain_config
from csrl.pretrain.data import heldout_lines, open_pretrain_data, packed_sequences, read_lines, resolve_files
from csrl.pretrain.model import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("embedded:all-MiniLM-L6-v2")


def test_heldout_split_is_a_fixed_share_by_content() -> None:
    lines = [f"sentence number {i} of the corpus" for i in range(20_000)]
    held = heldout_lines(lines, 0.05)
    sigma = math.sqrt(0.05 * 0.95 / len(lines))
    assert abs(held.mean() - 0.05) < 5 * sigma
    # by content: the same line is held out wherever it is, in any order, with any spacing or case
    shuffled = list(reversed(lines))
    assert np.array_equal(heldout_lines(shuffled, 0.05), held[::-1])
    i = int(np.flatnonzero(held)[0])
    assert heldout_lines([lines[i].upper().replace(" ", "  ")], 0.05)[0]
    assert not heldout_lines(lines, 0.0).any()


def test_a_cut_last_line_is_dropped_and_said(tmp_path: Path) -> None:
    cut, whole = tmp_path / "cut.txt", tmp_path / "whole.txt"
    cut.write_text("first line\nsecond line\nthird li")
    whole.write_text("first line\nsecond line\n")
    said: list[str] = []
    assert read_lines([cut, whole], drop_cut_last_line=True, log=said.append) == [
        "first line", "second line", "first line", "second line",
    ]  # fmt: skip
    assert len(said) == 1 and "cut.txt" in said[0]
    assert read_lines([cut], drop_cut_last_line=False, log=said.append)[-1] == "third li"


def test_evaluation_text_is_refused(tmp_path: Path) -> None:
    (tmp_path / "sts" / "stsb").mkdir(parents=True)
    (tmp_path / "sts" / "stsb" / "x.txt").write_text("a sentence\n")
    with pytest.raises(CsrlError, match="evaluation text"):
        resolve_files(["sts/stsb/x.txt"], tmp_path, allow_eval_text=False, setting="data.train_files")
    assert resolve_files(["sts/stsb/x.txt"], tmp_path, allow_eval_text=True, setting="data.train_files")
    with pytest.raises(CsrlError, match="not found"):
        resolve_files(["nope.txt"], tmp_path, allow_eval_text=False, setting="data.train_files")


def test_packed_blocks_are_full_and_keep_the_text_in_order() -> None:
    lines = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
    seqs = packed_sequences(lines, 101, 102, 6)
    stream = [5, 6, 7, 102, 8, 102, 9, 10, 11, 12, 13, 102, 14, 15, 102]
    assert len(seqs) == len(stream) // 4
    for k in range(len(seqs)):
        block = seqs.get(k).tolist()
        assert len(block) == 6 and block[0] == 101 and block[-1] == 102
        assert block[1:-1] == stream[4 * k : 4 * k + 4]


def test_lines_become_cls_line_sep_within_max_length(tmp_path: Path, tokenizer: Any) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"line {i} " + "word " * (i % 40) + "\n" for i in range(200)))
    cfg = load_pretrain_config(
        None, [f"data.train_files=[{corpus}]", "data.max_length=16", "data.heldout_fraction=0.1", "train.batch_size=4"]
    )
    data = open_pretrain_data(cfg, tokenizer, None, rank=0, world_size=1, log=lambda m: None)
    assert data.n_lines + data.n_heldout_lines == 200 and data.n_heldout_lines > 0
    assert len(data.train) == data.n_lines and len(data.heldout) == data.n_heldout_lines
    lengths = data.train.lengths()
    assert lengths.max() == 16 and lengths.min() >= 4
    for i in range(len(data.train)):
        s = data.train.get(i)
        assert s[0] == tokenizer.cls_token_id and s[-1] == tokenizer.sep_token_id
    assert len(data.batch(0, 0)) == 4
