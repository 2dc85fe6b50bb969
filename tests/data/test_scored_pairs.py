"""Scored pairs: SentEval's STS-B layout and CSV/TSV/JSONL (sentence1, sentence2, score) corpora; bad scores and
wrong field counts fail with file and line; the trainer's batches carry the scores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from csrl.data.scored_pairs import ScoredPairs, open_scored_pairs, read_stsb_pairs, record_score
from csrl.errors import CsrlError
from csrl.train.batches import open_training_data
from csrl.train.config import load_config

STSB_LINES = [
    "main-captions\tMSRvid\t2012test\t0001\t5.000\ta plane is taking off .\tan air plane is taking off .",
    "main-news\theadlines\t2013\t0042\t0.800\t  two   men play  \tthe stock market fell",
    "main-forums\tdeft-forum\t2014\t0003\t3.25\ta cat sleeps\ta cat is sleeping",
]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def test_stsb_layout_reads_pairs_and_scores(tmp_path: Path) -> None:
    pairs = open_scored_pairs([_write(tmp_path / "sts-train.csv", STSB_LINES)], fmt="stsb")
    assert isinstance(pairs, ScoredPairs) and len(pairs) == 3 and pairs.fields == ("sentence1", "sentence2", "score")
    assert pairs.get(1) == ("two men play", "the stock market fell", "0.800")  # whitespace normalised
    assert [record_score(r) for r in pairs.get_many([0, 1, 2])] == [5.0, 0.8, 3.25]
    assert pairs.record_bytes().tolist() == [len(a) + len(b) + 1 for a, b, _ in pairs.get_many(range(3))]


@pytest.mark.parametrize(
    "line,needle",
    [
        ("g\tf\t2012\t7\tfour\ta\tb", "the gold score (field 5) 'four' is not a finite number"),
        ("g\tf\t2012\t7\tnan\ta\tb", "the gold score (field 5) 'nan' is not a finite number"),
        ("g\tf\t2012\t7\t\ta\tb", "the gold score (field 5) '' is not a finite number"),
        (
            "g\tf\t2012\t7\t3.0\ta",
            "expected 7 tab-separated fields (genre, file, year, id, score, sentence1, sentence2), found 6",
        ),
        ("g\tf\t2012\t7\t3.0\ta\tb\textra", "found 8"),
        ("", "found 1"),
        ("g\tf\t2012\t7\t3.0\t \tb", "sentence1 is empty"),
    ],
)
def test_stsb_layout_errors_name_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    path = _write(tmp_path / "sts-train.csv", [STSB_LINES[0], STSB_LINES[1], line, STSB_LINES[2]])
    with pytest.raises(CsrlError) as err:
        read_stsb_pairs(path)
    assert err.value.message.startswith(f"{path}:3: ") and needle in err.value.message, err.value.message
    assert err.value.hint


def test_csv_tsv_and_jsonl_scored_corpora(tmp_path: Path) -> None:
    csv = _write(tmp_path / "pairs.csv", ["s1,s2,label", 'a man runs,"a person, running",4.5', "x,y,0"])
    corpus = open_scored_pairs([csv], fmt="auto")
    assert [tuple(r) for r in corpus.get_many([0, 1])] == [("a man runs", "a person, running", "4.5"), ("x", "y", "0")]
    tsv = _write(tmp_path / "pairs.tsv", ["score\tb\ta", "1.5\tsecond\tfirst"])
    assert open_scored_pairs([tsv], columns=["a", "b", "score"]).get(0) == ("first", "second", "1.5")
    jsonl = _write(tmp_path / "pairs.jsonl", ['{"s1": "one", "s2": "two", "score": "2.5", "id": 3}'])
    assert record_score(open_scored_pairs([jsonl], columns=["s1", "s2", "score"]).get(0)) == 2.5


def test_csv_bad_score_and_field_count_name_file_and_line(tmp_path: Path) -> None:
    csv = _write(tmp_path / "pairs.csv", ["s1,s2,score", "a,b,4", '"multi', 'line",c,1', "d,e,high", "f,g,2"])
    with pytest.raises(CsrlError) as err:
        open_scored_pairs([csv])
    assert err.value.message.startswith(f"{csv}:5: the gold score (field 'score') 'high' is not a finite number")
    two = _write(tmp_path / "two.csv", ["s1,s2", "a,b"])
    with pytest.raises(
        CsrlError, match=r"scored pairs need 3 fields \(sentence1, sentence2, score\), the corpus yields 2"
    ):
        open_scored_pairs([two])
    short = _write(tmp_path / "short.csv", ["s1,s2,score", "a,b,1", "c,2"])
    with pytest.raises(CsrlError, match=r"line 3"):
        open_scored_pairs([short])
    with pytest.raises(CsrlError, match="data.columns does not apply to data.format=stsb"):
        open_scored_pairs([csv], fmt="stsb", columns=["s1", "s2", "score"])
    with pytest.raises(CsrlError, match="read from files"):
        open_scored_pairs([tmp_path], fmt="stsb")


def test_real_stsb_train(data_dir: Path) -> None:
    pairs = open_scored_pairs([data_dir / "sts" / "stsb" / "sts-train.csv"], fmt="stsb")
    scores = [record_score(r) for r in pairs.get_many(range(len(pairs)))]
    assert len(pairs) == 5749 and min(scores) == 0.0 and max(scores) == 5.0
    assert pairs.get(0) == ("a plane is taking off .", "an air plane is taking off .", "5.000")


# ----------------------------------------------------------------------------- what the trainer reads
def test_training_data_of_scored_pairs(tmp_path: Path, tiny_model_dir: Path) -> None:
    from csrl.models.encoder import Encoder

    path = _write(tmp_path / "sts-train.csv", STSB_LINES + [STSB_LINES[0].replace("5.000", "1.0")])
    cfg = load_config(None, [f"data.train_files=[{path}]", "data.format=stsb", "loss.name=cosent",
                             "train.batch_size=2", f"model.model={tiny_model_dir}"])  # fmt: skip
    data = open_training_data(cfg, tmp_path, rank=0, world_size=1)
    assert data.scored and data.n_fields == 3 and data.n_views == 2 and data.n_records == 4
    records = data.records(0, 0, step=0)
    enc = Encoder.from_pretrained(cfg.model)
    features = data.features(records, enc, 32)
    assert features["input_ids"].shape[0] == 4  # two views: sentence1 rows, then sentence2 rows
    want = enc.tokenize([r[0] for r in records] + [r[1] for r in records], max_length=32, views=2)
    assert torch.equal(features["input_ids"], want["input_ids"])  # the score field is not tokenised
    gold = data.gold(records, torch.device("cpu"))
    assert gold["scores"].dtype == torch.float32 and gold["scores"].tolist() == [float(r[2]) for r in records]


def test_the_trainer_refuses_scored_pairs_for_other_losses(tmp_path: Path) -> None:
    path = _write(tmp_path / "sts-train.csv", STSB_LINES)
    for sets in (["data.format=stsb"], ["data.format=tsv", "data.scored_pairs=true"]):
        cfg = load_config(None, [f"data.train_files=[{path}]", "loss.name=infonce", *sets])
        with pytest.raises(CsrlError, match="loss 'infonce' does not train on scored pairs") as err:
            open_training_data(cfg, tmp_path, rank=0, world_size=1)
        assert "cosent" in (err.value.hint or "") and "angle" in (err.value.hint or "")


def test_no_duplicates_keeps_sentences_apart_not_scores(tmp_path: Path) -> None:
    """data.no_duplicates compares the sentences of scored pairs; equal scores are no duplicates."""
    lines = [f"g\tf\t2012\t{i}\t3.0\tsentence {i} one\tsentence {i} two" for i in range(8)]
    path = _write(tmp_path / "sts-train.csv", lines)
    sets = [f"data.train_files=[{path}]", "data.format=stsb", "loss.name=cosent", "train.batch_size=4"]
    data = open_training_data(load_config(None, [*sets, "data.no_duplicates=true"]), tmp_path, rank=0, world_size=1)
    assert data.steps_in_epoch(0) == 2 and sorted(r[0] for p in (0, 1) for r in data.records(0, p, step=0)) == sorted(
        f"sentence {i} one" for i in range(8)
    )
    path = _write(tmp_path / "dups.csv", [*lines[:7], "g\tf\t2012\t7\t1.0\tsentence 0 one\tanother"])
    data = open_training_data(load_config(None, [*sets[1:], f"data.train_files=[{path}]", "data.no_duplicates=true"]),
                              tmp_path, rank=0, world_size=1)  # fmt: skip
    for p in range(data.steps_in_epoch(0)):
        firsts = [r[0] for r in data.records(0, p, step=0)]
        assert len(firsts) == len(set(firsts))  # the repeated sentence never shares a batch with its twin
