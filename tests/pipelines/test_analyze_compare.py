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
