"""``csrl pretrain`` from the command line, and its model in ``csrl eval``, ``csrl analyze`` and ``csrl train``
(with SimCSE's MLM auxiliary loss, which needs the head the pretrained folder carries)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csrl.cli.main import main
from csrl.pretrain.loop import PretrainResult

RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs").glob("pretrain-*.yaml"))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return code, out, err


def test_there_are_cpu_gpu_and_test_recipes() -> None:
    assert {p.name for p in RECIPES} >= {"pretrain-mlm-cpu.yaml", "pretrain-mlm-gpu.yaml", "pretrain-tiny-test.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_pretrain_recipe_dry_runs(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["pretrain", str(recipe), "--dry-run"], capsys)
    assert code == 0, err
    cfg = json.loads(out)
    assert set(cfg) == {"model", "data", "train", "output_dir"}
    assert not any(f.startswith(("sts/", "transfer/", "nli/")) for f in cfg["data"]["train_files"])


def test_mistakes_exit_2_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["pretrain", str(RECIPES[0]), "--dry-run", "--set", "train.lrr=1e-3"], capsys)
    assert code == 2 and "unknown config key 'train.lrr'" in err and "train.lr" in err
    code, _, err = run(["pretrain", str(RECIPES[0]), "--dry-run", "--set", "model.heads=3"], capsys)
    assert code == 2 and "not a multiple of model.heads" in err
    code, _, err = run(["pretrain", str(RECIPES[0]), "--dry-run", "--set", "data.mlm_probability=1.5"], capsys)
    assert code == 2 and "data.mlm_probability" in err


def test_pretrain_command_runs_and_reports(
    tmp_path: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = next(p for p in RECIPES if p.name == "pretrain-tiny-test.yaml")
    argv = ["pretrain", str(recipe), "--set", f"data.train_files=[{tiny_corpus}]", "--set", "train.max_steps=2",
            "--set", "train.eval_every=2", "--output-dir", str(tmp_path / "run")]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "held-out MLM accuracy" in out and str(tmp_path / "run" / "model") in out


def test_the_model_in_eval_analyze_and_train_with_mlm_aux(
    tiny_mlm_run: PretrainResult, fake_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_mlm_run.model_dir)
    data = ["--data-dir", str(fake_data_dir)]
    code, out, err = run(["eval", model, "--pooler", "mean", *data], capsys)
    assert code == 0 and "Avg" in out, err
    code, out, err = run(["analyze", model, "--pooler", "mean", "--out", str(tmp_path / "an"), *data], capsys)
    assert code == 0, err
    assert (tmp_path / "an" / "analysis.json").exists()
    argv = ["train", "configs/quickstart-cpu.yaml", *data, "--output-dir", str(tmp_path / "simcse"), "--no-before",
            "--set", f"model.model={model}", "--set", "train.batch_size=8", "--set", "train.max_steps=2",
            "--set", "train.eval_every=0", "--set", "train.final_eval=false", "--set", "train.progress=false",
            "--set", "train.precision=fp32", "--set", "train.mlm_weight=0.1"]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0, err
    records = [json.loads(x) for x in (tmp_path / "simcse" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss/mlm" in r] == [1, 2]


def test_init_only_saves_the_weights_a_run_starts_from(
    tmp_path: Path, tiny_corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    recipe = str(next(p for p in RECIPES if p.name == "pretrain-tiny-test.yaml"))
    code, out, err = run(["pretrain", recipe, "--init-only", "--output-dir", str(tmp_path / "init")], capsys)
    assert code == 0, err
    init = tmp_path / "init" / "model"
    assert str(init) in out and AutoModelForMaskedLM.from_pretrained(str(init)) is not None
    # one update at lr 1e-30 moves no weight by more than ~1e-30: the run's step-1 weights are its initial ones
    argv = ["pretrain", recipe, "--set", f"data.train_files=[{tiny_corpus}]", "--set", "train.max_steps=1",
            "--set", "train.lr=1e-30", "--set", "train.warmup_steps=0", "--set", "train.eval_every=0",
            "--output-dir", str(tmp_path / "run")]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    a, b = load_file(str(init / "model.safetensors")), load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-20) for k in a)
    other = ["pretrain", recipe, "--init-only", "--set", "train.seed=7", "--output-dir", str(tmp_path / "seed7")]
    assert run(other, capsys)[0] == 0
    c = load_file(str(tmp_path / "seed7" / "model" / "model.safetensors"))
    assert not torch.equal(a["bert.encoder.layer.0.attention.self.query.weight"],
                           c["bert.encoder.layer.0.attention.self.query.weight"])  # fmt: skip
    code, _, err = run(["pretrain", recipe, "--init-only", "--output-dir", str(tmp_path / "init")], capsys)
    assert code == 2 and "exists" in err  # never overwrites
