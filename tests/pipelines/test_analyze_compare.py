"""``csrl analyze-compare``: saved analyses side by side (tables from the JSON, one overlay figure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csrl.cli.main import main
from csrl.pipelines.analyze import analyze_model, compare_analyses


def test_compare_tables_hold_each_models_own_numbers(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tiny_corpus.read_text().splitlines()[:60]
    a = analyze_model(str(tiny_model_dir), sentences=lines[:30], out_dir=tmp_path / "a")
    b = analyze_model(str(tiny_model_dir), sentences=lines[30:], out_dir=tmp_path / "b", seed=3)
    text = compare_analyses({"first": tmp_path / "a", "second": tmp_path / "b" / "analysis.json"}, tmp_path / "cmp")
    assert (tmp_path / "cmp" / "layer_metrics_compare.png").read_bytes().startswith(b"\x89PNG")
    block = text.split("anisotropy baseline (mean cosine)")[1].split("\n\n")[1]
    rows = [r.split("|")[1:-1] for r in block.splitlines()[2:]]
    assert len(rows) == a.n_layers
    for i, (layer, x, y) in enumerate(rows):
        assert int(layer) == i and float(x) == pytest.approx(a.anisotropy[i], abs=5e-4)
        assert float(y) == pytest.approx(b.anisotropy[i], abs=5e-4)
    assert "top rogue dimension" not in text or "share of the summed cosine" in text

    code = main(["analyze-compare", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"])
    assert code == 0 and "| layer | a | b |" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text(json.dumps({"n_layers": 1}))
    for argv, msg in ((["analyze-compare", f"a={tmp_path / 'a'}"], "at least two"),
                      (["analyze-compare", f"a={tmp_path / 'a'}", f"a={tmp_path / 'b'}"], "given twice"),
                      (["analyze-compare", f"a={tmp_path / 'a'}", str(tmp_path / "b")], "expected NAME=PATH"),
                      (["analyze-compare", f"a={tmp_path / 'a'}", f"b={tmp_path / 'nope'}"], "no analysis.json"),
                      (["analyze-compare", f"a={tmp_path / 'a'}", f"b={tmp_path / 'bad.json'}"], "not a csrl analysis")):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err


def test_analysis_reports_the_sentence_geometry_before_and_after_the_posthoc_modules(
    tiny_model_dir: Path, tiny_corpus: Path, fake_data_dir: Path, tmp_path: Path
) -> None:
    import torch

    from csrl.analysis.suite import analyze_sentence_embeddings, encode_pairs
    from csrl.data.sts import load_positive_pairs
    from csrl.models.encoder import load_encoder
    from csrl.models.posthoc import fit_posthoc

    lines = tiny_corpus.read_text().splitlines()
    fit_posthoc(tiny_model_dir, lines[:200], method="whitening", dims=16, out=tmp_path / "white", pooler="mean",
                data_dir=fake_data_dir)  # fmt: skip
    probe = lines[200:240]
    res = analyze_model(str(tmp_path / "white"), sentences=probe, data_dir=fake_data_dir)
    after = res.extra["sentence_after_tail"]
    assert after["dim"] == 16 and after["modules"][-1] != "Pooling"
    enc = load_encoder(str(tmp_path / "white"))
    xs, ys = load_positive_pairs(fake_data_dir)
    pooled = enc.token_states(probe).pooled
    # after: the folder's own encode() (pooler + whitening), pairs and sentences alike
    emb_after = torch.as_tensor(enc.encode(probe))
    want = analyze_sentence_embeddings(emb_after, positive_pairs=encode_pairs(enc.encode, xs, ys))
    for key in ("uniformity", "average_cosine", "alignment"):
        assert after[key] == pytest.approx(want.values[key], rel=1e-4, abs=1e-6), key
    # before: the pooled vector, and the positives before the whitening too (one consistent space)
    bare = load_encoder(str(tiny_model_dir), pooler="mean")
    want_before = analyze_sentence_embeddings(pooled, positive_pairs=encode_pairs(bare.encode, xs, ys))
    assert res.sentence is not None
    for key in ("uniformity", "average_cosine", "alignment"):
        assert res.sentence.values[key] == pytest.approx(want_before.values[key], rel=1e-4, abs=1e-6), key
    assert abs(after["average_cosine"] - res.sentence.values["average_cosine"]) > 1e-3  # whitening changed it
    plain = analyze_model(str(tiny_model_dir), sentences=probe, data_dir=fake_data_dir, pooler="mean")
    assert "sentence_after_tail" not in plain.extra  # a folder without post-pooling modules
