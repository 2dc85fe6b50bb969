"""Shared fixtures: a tiny random BERT (with the packaged model's tokenizer), and the data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tiny_bert import save_tiny_bert

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _embedding_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty embedding cache per test (``csrl eval``, the trainer's untrained-model table), never ~/.cache."""
    monkeypatch.setenv("CSRL_CACHE_DIR", str(tmp_path_factory.mktemp("embedding-cache")))


def data_dir_or_skip() -> Path:
    env = os.environ.get("CSRL_DATA_DIR")
    if not env or not Path(env).is_dir():
        pytest.skip("CSRL_DATA_DIR is not set to the data folder (../shared/data)")
    return Path(env)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return data_dir_or_skip()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random BERT (fast to train and encode)."""
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "sentences.txt"
    words = "the cat dog sat on a mat red blue green runs fast slow big small house tree".split()
    import random

    rng = random.Random(0)
    lines = {" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(400)}
    path.write_text("\n".join(sorted(lines)) + "\n")
    return path


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """A miniature data folder in the SentEval layout: 7 STS tasks of 24 pairs and a training corpus."""
    import random

    root = tmp_path_factory.mktemp("data")
    rng = random.Random(1)
    sents = tiny_corpus.read_text().splitlines()

    def pairs(n: int) -> list[tuple[str, str, float]]:
        return [(rng.choice(sents), rng.choice(sents), round(rng.uniform(0, 5), 2)) for _ in range(n)]

    for year in (12, 13, 14, 15, 16):
        d = root / "sts" / f"sts{year}"
        d.mkdir(parents=True)
        ps = pairs(24)
        (d / "STS.input.set.txt").write_text("".join(f"{a}\t{b}\n" for a, b, _ in ps))
        (d / "STS.gs.set.txt").write_text("".join(f"{g}\n" for *_, g in ps))
    d = root / "sts" / "stsb"
    d.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (d / f"sts-{split}.csv").write_text(
            "".join(f"g\tf\t2012\t{i}\t{g}\t{a}\t{b}\n" for i, (a, b, g) in enumerate(pairs(24)))
        )
    (d / "raw").mkdir()
    (d / "raw" / "sts-test.csv").write_text(
        "".join(f"g\tf\t2012\t{i}\t{g}\t{a.capitalize()}\t{b}\n" for i, (a, b, g) in enumerate(pairs(24)))
    )
    d = root / "sts" / "sickr"
    d.mkdir(parents=True)
    for name in ("SICK_train.txt", "SICK_trial.txt", "SICK_test_annotated.txt"):
        rows = "".join(f"{i}\t{a}\t{b}\t{g}\tNEUTRAL\n" for i, (a, b, g) in enumerate(pairs(24)))
        (d / name).write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n" + rows)
    w = root / "train" / "wiki"
    w.mkdir(parents=True)
    (w / "wiki1m_for_simcse.head.txt").write_text(tiny_corpus.read_text())
    return root
