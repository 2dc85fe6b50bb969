"""``analyze_model`` end to end on the tiny random BERT and the miniature data folder, and ``csrl analyze``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csrl.analysis.suite import AnalysisResult
from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.models.encoder import Encoder
from csrl.pipelines.analyze import STSB_SOURCE, analyze_model


def test_analyze_model_on_stsb_writes_json_and_figures(
    tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "analysis"
    res = analyze_model(str(tiny_model_dir), data_dir=fake_data_dir, out_dir=out, batch_size=8)
    assert res.n_sentences == 24 and res.n_layers == 3 and res.dim == 32  # embeddings + 2 layers
    assert res.extra["sentences"] == STSB_SOURCE and res.extra["model"] == str(tiny_model_dir)
    assert {"pooler", "seconds_forward", "seconds_positive_pairs", "seconds_metrics"} <= set(res.extra)
    gold = [float(x.split("\t")[4]) for x in (fake_data_dir / "sts/stsb/sts-test.csv").read_text().splitlines()]
    assert res.sentence is not None and res.sentence.n_positive_pairs == sum(g > 4 for g in gold) > 0
    assert isinstance(res.sentence.alignment, float)
    assert res.extra["figures"] == ["layer_metrics.png", "self_sim_by_frequency.png", "spectrum.png"]
    assert all((out / name).stat().st_size > 1000 for name in res.extra["figures"])
    saved = AnalysisResult.from_dict(json.loads((out / "analysis.json").read_text()))
    assert saved.to_dict() == res.to_dict()


def test_analyze_model_with_sentences_and_a_loaded_encoder(tiny_model_dir: Path, tiny_corpus: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir))
    before = enc.pooler
    lines = tiny_corpus.read_text().splitlines()
    res = analyze_model(enc, sentences=lines, limit=30, pooler="mean", data_dir=tiny_corpus.parent / "nowhere")
    assert res.n_sentences == 30 and res.sentence is not None
    assert res.extra["pooler"] == "mean" and enc.pooler == before  # the override ends with the call
    assert res.sentence.alignment is None and res.sentence.n_positive_pairs == 0  # no STS-B there
    again = analyze_model(enc, sentences=tiny_corpus, limit=30, data_dir=tiny_corpus.parent / "nowhere")
    assert again.extra["sentences"] == str(tiny_corpus) and "figures" not in again.extra


def test_analyze_model_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="not found"):
        analyze_model(str(tiny_model_dir), sentences=tmp_path / "missing.txt")
    one = tmp_path / "one.txt"
    one.write_text("only one sentence\n\n  \n")
    with pytest.raises(CsrlError, match="at least 2 sentences"):
        analyze_model(str(tmp_path / "no-model"), sentences=one)  # checked before the model loads
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbad \xff byte\n")
    with pytest.raises(CsrlError, match="not UTF-8"):
        analyze_model(str(tiny_model_dir), sentences=bad)


def test_cli_prints_the_table(
    tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(["analyze", str(tiny_model_dir), "--data-dir", str(fake_data_dir), "--out", str(out), "--limit", "20"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0] == (
        "| layer | anisotropy | self-sim | adj. self-sim | intra-sim | adj. intra-sim | norm | funct. ss | content ss | top rogue |"
    )
    assert lines[1] == "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" and lines[2].startswith("| 0 | ")
    assert len(lines[2].split("|")) == 12 and lines[5] == ""
    assert lines[6].startswith("sentence level: {") and '"uniformity": ' in lines[6]
    assert lines[8].startswith("20 sentences, ") and lines[8].endswith(f"written {out / 'analysis.json'} and 3 figures")
    assert json.loads((out / "analysis.json").read_text())["n_sentences"] == 20
