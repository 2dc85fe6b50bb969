"""The CLI in-process: clear errors (exit 2, no traceback) and an end-to-end run on miniature data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from csrl.cli.main import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("csrl: error:")
    for n in needles:
        assert n in err, (n, err)


def test_missing_data_folder(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["eval", str(tiny_model_dir), "--data-dir", str(tmp_path / "nowhere")], capsys)
    _user_error(code, err, "data folder not found", "CSRL_DATA_DIR", "csrl data fetch")


def test_malformed_sts_line(
    tmp_path: Path, fake_data_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "data"
    shutil.copytree(fake_data_dir, bad)
    f = bad / "sts" / "sts14" / "STS.input.set.txt"
    lines = f.read_text().splitlines()
    lines[6] = lines[6].replace("\t", " ")
    f.write_text("\n".join(lines) + "\n")
    code, _, err = run(["eval", str(tiny_model_dir), "--data-dir", str(bad)], capsys)
    _user_error(code, err, "STS.input.set.txt:7", "expected 2 tab-separated")


def test_empty_corpus(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    code, _, err = run(
        ["train", "configs/quickstart-cpu.yaml", "--set", f"model.model={tiny_model_dir}",
         "--set", f"data.train_files=[{empty}]", "--output-dir", str(tmp_path / "run"), "--no-before"],
        capsys,
    )  # fmt: skip
    _user_error(code, err, "empty")


def test_model_path_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["encode", str(tmp_path / "missing-model"), "-i", "x", "-o", "y"], capsys)
    _user_error(code, err, "input file")  # the input is checked first
    src = tmp_path / "s.txt"
    src.write_text("a sentence\n")
    code, _, err = run(
        ["encode", str(tmp_path / "missing-model"), "-i", str(src), "-o", str(tmp_path / "e.npy")], capsys
    )
    _user_error(code, err, "does not exist")


def test_unknown_config_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["train", "configs/quickstart-cpu.yaml", "--set", "train.learning_rate=1e-5", "--dry-run"], capsys
    )
    _user_error(code, err, "unknown config key 'train.learning_rate'")


def test_unknown_loss_lists_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["train", "configs/quickstart-cpu.yaml", "--set", "loss.name=simclr", "--dry-run"], capsys)
    _user_error(code, err, "unknown loss 'simclr'", "infonce", "arccon")


def test_encode_writes_npy(tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "s.txt"
    src.write_text("one sentence\nanother sentence here\n")
    code, out, err = run(["encode", str(tiny_model_dir), "-i", str(src), "-o", str(tmp_path / "e.npy")], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "e.npy").shape == (2, 32)


def test_train_end_to_end_with_before_after_table(
    tmp_path: Path, fake_data_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "run"
    argv = [
        "train", "configs/quickstart-cpu.yaml", "--data-dir", str(fake_data_dir), "--output-dir", str(out_dir),
        "--set", f"model.model={tiny_model_dir}", "--set", "train.batch_size=16", "--set", "train.max_steps=4",
        "--set", "train.eval_every=2", "--set", "data.max_sentences=null", "--set", "train.progress=false",
    ]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "before training" in out and "after training" in out and "STS-B" in out
    res = json.loads((out_dir / "results" / "sts_test.json").read_text())
    assert set(res["reported"]) == {"STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R", "Avg"}
    dev = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in dev if "eval/stsb_dev_spearman" in r] == [2, 4]
    # the saved best model evaluates from the CLI
    code, out, err = run(
        ["eval", str(out_dir / "best"), "--data-dir", str(fake_data_dir), "-o", str(tmp_path / "r.json")], capsys
    )
    assert code == 0, err and "Avg" in out


def test_nli_triplets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "nli" / "senteval_snli"
    d.mkdir(parents=True)
    for split in ("dev", "test"):
        (d / f"s1.{split}").write_text("a man .\na man .\na man .\nno pair .\n")
        (d / f"s2.{split}").write_text("a person .\na woman .\nsomeone .\nx .\n")
        (d / f"labels.{split}").write_text("entailment\ncontradiction\nentailment\nneutral\n")
    code, out, err = run(["data", "nli-triplets", "--data-dir", str(tmp_path), "--out", str(tmp_path / "t.csv"),
                          "--splits", "dev"], capsys)  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "t.csv").read_text() == "sent0,sent1,hard_neg\na man .,a person .,a woman .\n"


def test_real_snli_triplet_count(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["data", "nli-triplets", "--data-dir", str(data_dir), "--out", str(tmp_path / "t.csv")], capsys)
    assert code == 0 and out.startswith("5864 triplets")
