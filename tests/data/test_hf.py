"""Training data from Parquet files, dataset folders, Hub ids and in-memory datasets (csrl.data.hf)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from csrl.data.corpora import Corpus, CorpusWarning, open_corpus
from csrl.data.hf import (
    DatasetCorpus,
    corpus_from_dataset,
    is_dataset_source,
    open_dataset_corpus,
    open_training_corpus,
    parse_hub_id,
)
from csrl.errors import CsrlError

datasets = pytest.importorskip("datasets")  # in the dev extra: CI runs these

ROWS = [
    ("a cat sits on the mat", "a cat is on a mat", "dogs run fast"),
    ("the sky is blue", "blue is the colour of the sky", "grass is green"),
    ("she plays the piano", "a woman makes music", "he sleeps"),
    ("trains are late again", "the train is delayed", "the sun rises"),
    ("héllo wörld ünïcode", "unicode text here", "ascii only"),
    ("two men ride horses", "people on horseback", "an empty street"),
]
COLUMNS = ("anchor", "positive", "negative")


def _dataset(rows: list[tuple[str, ...]] = ROWS, **extra: list[object]) -> datasets.Dataset:
    data: dict[str, list[object]] = {c: [r[k] for r in rows] for k, c in enumerate(COLUMNS)}
    return datasets.Dataset.from_dict({**data, **extra})


def _parquet(path: Path, rows: list[tuple[str, ...]] = ROWS, **extra: list[object]) -> Path:
    _dataset(rows, **extra).to_parquet(str(path))
    return path


def test_parquet_matches_the_same_rows_as_csv(tmp_path: Path) -> None:
    """The same records, field names and byte lengths as the CSV reader gives for the same table."""
    pq = _parquet(tmp_path / "pairs.parquet")
    csv = tmp_path / "pairs.csv"
    csv.write_text(",".join(COLUMNS) + "\n" + "".join(",".join(r) + "\n" for r in ROWS), encoding="utf-8")
    ours, ref = open_dataset_corpus(pq), open_corpus(csv)
    assert isinstance(ours, DatasetCorpus) and ours.fields == ref.fields == COLUMNS
    assert len(ours) == len(ref) == len(ROWS)
    assert [ours.get(i) for i in range(len(ours))] == [ref.get(i) for i in range(len(ref))] == ROWS
    assert ours.get_many([4, 0, 4]) == ref.get_many([4, 0, 4]) == [ROWS[4], ROWS[0], ROWS[4]]
    assert ours.get(-1) == ROWS[-1] and list(ours) == ROWS
    np.testing.assert_array_equal(ours.record_bytes(), ref.record_bytes())
    with pytest.raises(IndexError):
        ours.get(len(ROWS))


def test_columns_select_and_order_fields(tmp_path: Path) -> None:
    corpus = open_dataset_corpus(_parquet(tmp_path / "p.parquet"), columns=["positive", "anchor"])
    assert corpus.fields == ("positive", "anchor")
    assert corpus.get(1) == (ROWS[1][1], ROWS[1][0])
    assert corpus.record_bytes()[1] == len(ROWS[1][1].encode()) + 1 + len(ROWS[1][0].encode())


def test_a_missing_column_lists_the_available_ones(tmp_path: Path) -> None:
    pq = _parquet(tmp_path / "p.parquet", score=[1.0] * len(ROWS))
    with pytest.raises(CsrlError) as e:
        open_dataset_corpus(pq, columns=["anchor", "sentence2"])
    assert str(pq) in e.value.message and "'sentence2'" in e.value.message
    assert "'anchor' (string)" in e.value.message and "'score' (double)" in e.value.message


def test_a_non_text_column_is_refused_not_dropped(tmp_path: Path) -> None:
    """An STS-style table: training on all its columns would use the score as a sentence."""
    ds = _dataset(score=[float(k) for k in range(len(ROWS))])
    with pytest.raises(CsrlError, match=r"column 'score' holds double, not text") as e:
        corpus_from_dataset(ds)
    assert "data.columns" in (e.value.hint or "")
    assert corpus_from_dataset(ds, ["anchor", "positive"]).fields == ("anchor", "positive")


@pytest.mark.parametrize(("cell", "what"), [(None, "null (missing)"), ("", "empty"), ("  \t ", "empty")])
def test_null_and_empty_cells_are_refused_with_the_row(cell: str | None, what: str) -> None:
    rows = [list(r) for r in ROWS]
    rows[3][1] = cell  # type: ignore[call-overload]
    rows[5][1] = None  # type: ignore[call-overload]
    ds = datasets.Dataset.from_dict({c: [r[k] for r in rows] for k, c in enumerate(COLUMNS)})
    with pytest.raises(CsrlError) as e:
        corpus_from_dataset(ds)
    assert f"row 3: column 'positive' is {what}; 2 rows have a null or empty 'positive'" in e.value.message
    assert corpus_from_dataset(ds, ["anchor", "negative"]).get(3) == (ROWS[3][0], ROWS[3][2])  # other columns fine


def test_long_cells_are_cut_and_reported() -> None:
    rows = [*ROWS, ("x" * 50, "short", "short")]
    with pytest.warns(CorpusWarning, match=r"1 row\(s\) have a 'anchor' longer than 30 characters \(rows 6\)"):
        corpus = corpus_from_dataset(_dataset(rows), max_chars=30)
    assert corpus.get(6) == ("x" * 30, "short", "short") and corpus.get(1) == ROWS[1]


def test_a_shuffled_dataset_keeps_its_order() -> None:
    ds = _dataset().shuffle(seed=3)
    corpus = corpus_from_dataset(ds)
    assert [corpus.get(i) for i in range(len(ds))] == [tuple(ds[i][c] for c in COLUMNS) for i in range(len(ds))]
    assert [corpus.get(i) for i in range(len(ds))] != ROWS  # the shuffle did move rows


def test_wrong_objects_get_clear_errors() -> None:
    dd = datasets.DatasetDict({"train": _dataset(), "test": _dataset()})
    with pytest.raises(CsrlError, match=r"DatasetDict \(splits 'train', 'test'\)"):
        corpus_from_dataset(dd)
    with pytest.raises(CsrlError, match="streaming IterableDataset"):
        corpus_from_dataset(_dataset().to_iterable_dataset())
    with pytest.raises(CsrlError, match="expected a datasets.Dataset, got a dict"):
        corpus_from_dataset({"anchor": ["x"]})
    with pytest.raises(CsrlError, match="the dataset is empty"):
        corpus_from_dataset(_dataset([]))


def test_save_to_disk_folders(tmp_path: Path) -> None:
    _dataset().save_to_disk(str(tmp_path / "one"))
    assert list(open_dataset_corpus(tmp_path / "one")) == ROWS
    datasets.DatasetDict({"validation": _dataset(ROWS[:2]), "train": _dataset(ROWS[2:])}).save_to_disk(
        str(tmp_path / "dict")
    )
    assert list(open_dataset_corpus(tmp_path / "dict")) == ROWS[2:]  # the train split
    assert list(open_dataset_corpus(tmp_path / "dict" / "validation")) == ROWS[:2]  # a split's folder
    datasets.DatasetDict({"validation": _dataset()}).save_to_disk(str(tmp_path / "no-train"))
    with pytest.raises(CsrlError, match=r"without a 'train' split \(splits: 'validation'\)"):
        open_dataset_corpus(tmp_path / "no-train")


def test_a_hub_style_repository_folder_loads_locally(tmp_path: Path) -> None:
    """A dataset repository cloned from the Hub: data files plus a README declaring its configs."""
    repo = tmp_path / "user__pairs"
    (repo / "data").mkdir(parents=True)
    _parquet(repo / "data" / "train-00000-of-00001.parquet")
    _parquet(repo / "data" / "test-00000-of-00001.parquet", ROWS[:1])
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
        "  - split: test\n    path: data/test-*\n---\n# pairs\n"
    )
    cache = tmp_path / "hf-cache"
    direct = datasets.load_dataset(str(repo), split="train", cache_dir=str(cache))
    corpus = open_dataset_corpus(repo, columns=["anchor", "positive"], cache_dir=cache)
    assert list(corpus) == [(r["anchor"], r["positive"]) for r in direct] == [r[:2] for r in ROWS]
    jsonl = tmp_path / "jsonl-repo"
    jsonl.mkdir()
    (jsonl / "train.jsonl").write_text("".join(json.dumps(dict(zip(COLUMNS, r, strict=True))) + "\n" for r in ROWS))
    assert list(open_dataset_corpus(jsonl, cache_dir=cache)) == ROWS


def test_a_hub_id_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # CI sets it; make sure here too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(CsrlError) as e:
        open_dataset_corpus("hf://csrl-test/no-such-dataset:train", cache_dir=tmp_path / "cache")
    assert "hf://csrl-test/no-such-dataset:train" in e.value.message
    assert "HF_HUB_OFFLINE=1" in (e.value.hint or "") and "save_to_disk" in (e.value.hint or "")


def test_hub_id_syntax() -> None:
    assert parse_hub_id("hf://user/name") == ("user/name", None, "train")
    assert parse_hub_id("hf://user/name:validation") == ("user/name", None, "validation")
    assert parse_hub_id("hf://user/name:triplet:train") == ("user/name", "triplet", "train")
    for bad in ("hf://", "hf://user/name:", "hf://a:b:c:d"):
        with pytest.raises(CsrlError, match="not a Hub dataset reference"):
            parse_hub_id(bad)


def test_several_sources_concatenate(tmp_path: Path) -> None:
    a = _parquet(tmp_path / "a.parquet", ROWS[:2])
    _dataset(ROWS[2:]).save_to_disk(str(tmp_path / "b"))
    corpus = open_dataset_corpus([a, tmp_path / "b", _dataset(ROWS[:1])])
    assert list(corpus) == [*ROWS, ROWS[0]]
    assert len(corpus.record_bytes()) == len(ROWS) + 1
    with pytest.raises(CsrlError, match=r"yields 2 field\(s\)"):
        open_dataset_corpus([a, datasets.Dataset.from_dict({"x": ["a"], "y": ["b"]})])


def test_training_corpus_dispatch(tmp_path: Path, tiny_corpus: Path) -> None:
    pq = _parquet(tmp_path / "p.parquet")
    assert isinstance(open_training_corpus([tiny_corpus]), Corpus)
    assert isinstance(open_training_corpus([pq]), DatasetCorpus)
    assert is_dataset_source(tmp_path) and is_dataset_source("hf://x/y") and not is_dataset_source(tiny_corpus)
    with pytest.raises(CsrlError, match="mixes text-like files"):
        open_training_corpus([tiny_corpus, pq])
    with pytest.raises(CsrlError, match="data.format='csv' applies to text"):
        open_training_corpus([pq], fmt="csv")


def test_train_files_resolve_to_sources_and_to_the_files_read(tmp_path: Path) -> None:
    """``resolve_train_sources`` keeps folders and Hub ids; ``resolve_train_files`` (the run's data fingerprint)
    lists the files a folder is read from, and nothing for a Hub id."""
    from csrl.train.batches import resolve_train_files, resolve_train_sources
    from csrl.train.config import load_config

    _dataset().save_to_disk(str(tmp_path / "saved"))
    pq = _parquet(tmp_path / "p.parquet")
    cfg = load_config(None, [f"data.train_files=[saved,{pq},hf://user/name:train]"])
    assert resolve_train_sources(cfg, tmp_path) == [tmp_path / "saved", pq, "hf://user/name:train"]
    saved = sorted(p for p in (tmp_path / "saved").iterdir())
    assert [p.name for p in saved] == ["data-00000-of-00001.arrow", "dataset_info.json", "state.json"]
    assert resolve_train_files(cfg, tmp_path) == [*saved, pq]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.md").write_text("not data\n")
    with pytest.raises(CsrlError, match="is a folder, not a file, and holds no dataset"):
        resolve_train_sources(load_config(None, [f"data.train_files=[{tmp_path / 'notes'}]"]), tmp_path)


@pytest.mark.parametrize("kind", ["parquet", "save_to_disk"])
def test_two_training_steps(kind: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    from csrl.train.config import load_config
    from csrl.train.loop import train

    rows = [(f"sentence number {k} about {w}", f"a paraphrase of {k} on {w}") for k in range(8) for w in ("x", "y")]
    ds = datasets.Dataset.from_dict(
        {"sent0": [r[0] for r in rows], "sent1": [r[1] for r in rows], "score": [1.0] * len(rows)}
    )
    source = tmp_path / ("pairs.parquet" if kind == "parquet" else "pairs")
    if kind == "parquet":
        ds.to_parquet(str(source))
    else:
        ds.save_to_disk(str(source))
    cfg = load_config(
        None,
        [
            f"model.model={tiny_model_dir}",
            f"data.train_files=[{source}]",
            "data.columns=[sent0,sent1]",
            f"output_dir={tmp_path / 'run'}",
            "train.batch_size=4",
            "train.max_steps=2",
            "train.eval_every=0",
            "train.final_eval=false",
            "train.progress=false",
            "train.num_threads=1",
        ],
    )
    res = train(cfg)
    losses = [r["train/loss"] for r in res.metrics if "train/loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert (tmp_path / "run" / "best" / "modules.json").exists()
