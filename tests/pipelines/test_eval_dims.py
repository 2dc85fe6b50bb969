"""``csrl eval --dims`` / ``evaluate_model(dims=...)``: STS of truncated embeddings, encoded once."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from csrl.api import evaluate_encoder
from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.models.encoder import load_encoder
from csrl.pipelines.evaluate import evaluate_model


def test_each_dim_row_equals_a_model_truncated_by_hand(tiny_model_dir: Path, fake_data_dir: Path) -> None:
    ev = evaluate_model(str(tiny_model_dir), data_dir=fake_data_dir, dims=(16, 4, 16))  # sorted, each once
    assert list(ev.sts_dims) == [4, 16] and ev.sts is not None
    plain = evaluate_model(str(tiny_model_dir), data_dir=fake_data_dir)
    assert plain.sts is not None and not plain.sts_dims
    assert ev.sts.scores() == plain.sts.scores()  # the full-width row is unchanged by --dims

    enc = load_encoder(str(tiny_model_dir))
    calls: list[int] = []

    def truncated_by_hand(m: int) -> object:
        def encode(sentences: Sequence[str]) -> np.ndarray:
            calls.append(len(sentences))
            return enc.encode(list(sentences))[:, :m]

        return encode

    for m in (4, 16):
        by_hand = evaluate_encoder(truncated_by_hand(m), data_dir=fake_data_dir)
        assert by_hand.sts is not None
        assert ev.sts_dims[m].scores() == pytest.approx(by_hand.sts.scores(), abs=1e-9), m
    assert ev.sts_dims[4].scores() != pytest.approx(ev.sts.scores(), abs=1e-3)  # truncation changes the scores

    # the Python API on an encoder object: each sentence encoded once for the full row and every truncation
    calls.clear()
    api = evaluate_encoder(truncated_by_hand(32), data_dir=fake_data_dir, dims=(4, 16))
    assert api.sts is not None and sum(calls) == api.sts.n_unique_sentences
    assert api.sts_dims[4].scores() == pytest.approx(ev.sts_dims[4].scores(), abs=1e-9)
    table = api.sts_markdown()
    assert "[:4] |" in table and "[:16] |" in table and len(table.splitlines()) == 5  # head, rule, 3 rows
    assert set(api.to_dict()["sts_dims"]) == {"4", "16"}


def test_dims_beyond_the_embedding_are_refused(tiny_model_dir: Path, fake_data_dir: Path) -> None:
    with pytest.raises(CsrlError, match="dims 33: the embedding has 32 dimensions"):
        evaluate_model(str(tiny_model_dir), data_dir=fake_data_dir, dims=(8, 33))
    with pytest.raises(CsrlError, match="the embedding has 32 dimensions"):  # an object: checked once it has encoded
        evaluate_encoder(
            lambda s: load_encoder(str(tiny_model_dir)).encode(list(s)), data_dir=fake_data_dir, dims=(64,)
        )


def test_cli_dims_rows_json_and_cache(
    tmp_path: Path, tiny_model_dir: Path, fake_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "r.json"
    argv = ["eval", str(tiny_model_dir), "--data-dir", str(fake_data_dir), "--dims", "8,16", "-o", str(out_json)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[:8] |" in out and "[:16] |" in out and "embeddings encoded and stored" in out
    res = json.loads(out_json.read_text())
    assert set(res["sts_dims"]) == {"8", "16"} and "Avg" in res["sts_dims"]["8"]["reported"]

    def reported(path: Path) -> dict[str, object]:
        return {m: r["reported"] for m, r in json.loads(path.read_text())["sts_dims"].items()}

    first = reported(out_json)
    assert main(argv) == 0  # again: the full-width embeddings come from the cache, the rows are the same
    out = capsys.readouterr().out
    assert "embeddings read from" in out
    assert reported(out_json) == first
    assert main([*argv, "--no-cache"]) == 0
    assert "embedding cache" not in capsys.readouterr().out
    assert reported(out_json) == first


@pytest.mark.parametrize("value,words", [("0", "0"), ("8,x", "'x'"), ("", "empty"), ("64", "32 dimensions")])
def test_cli_bad_dims_are_user_errors(
    value: str, words: str, tiny_model_dir: Path, fake_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["eval", str(tiny_model_dir), "--data-dir", str(fake_data_dir), "--dims", value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("csrl: error:") and "Traceback" not in err and words in err, err
