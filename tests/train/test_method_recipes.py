"""End to end with the tiny model: the PromptBERT and SNCSE recipes (configs/methods/) train for 3 steps, keep and
evaluate their best model with their own pooler, log their terms; SNCSE's negation view and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.models.encoder import load_encoder
from csrl.train.batches import open_training_data
from csrl.train.config import load_config
from csrl.train.loop import train

METHODS = Path(__file__).parents[2] / "configs" / "methods"


def _sets(model: Path, corpus: Path, out: Path) -> list[str]:
    return [f"model.model={model}", f"data.train_files=[{corpus}]", f"output_dir={out}", "train.batch_size=8",
            "train.max_steps=3", "train.eval_every=2", "train.checkpoint_every=0", "train.precision=fp32",
            "train.num_threads=1", "train.progress=false"]  # fmt: skip


def _records(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_recipes_inherit_the_quickstart() -> None:
    promptbert = load_config(METHODS / "promptbert.yaml")
    quick = load_config(METHODS.parent / "quickstart-cpu.yaml")
    assert promptbert.train == quick.train and promptbert.data == quick.data
    assert promptbert.model.pooler == "prompt" and promptbert.model.prompt_denoise
    assert promptbert.model.prompt_denoise_at_inference is False and promptbert.loss == quick.loss
    sncse = load_config(METHODS / "sncse.yaml")
    assert sncse.loss.name == "sncse" and dict(sncse.loss.params)["bml_weight"] == 1e-3  # another loss: replaced


def test_base_recipes_merge_chain_and_refuse_loops(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model: {pooler: mean}\nloss: {name: infonce, params: {temperature: 0.1}}\n"
                                     "train: {lr: 1.0e-4, batch_size: 16}\n")  # fmt: skip
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text(
        "base: ../a.yaml\ntrain: {lr: 2.0e-5}\nloss: {params: {temperature: 0.2}}\n"
    )
    (tmp_path / "c.yaml").write_text("base: sub/b.yaml\nloss: {name: arccon}\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.model.pooler == "mean" and cfg.train.lr == 2e-5 and cfg.train.batch_size == 16
    assert cfg.loss.name == "arccon" and dict(cfg.loss.params) == {}  # another loss drops the base's parameters
    assert dict(load_config(tmp_path / "sub" / "b.yaml").loss.params) == {"temperature": 0.2}
    (tmp_path / "loop1.yaml").write_text("base: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("base: loop1.yaml\n")
    with pytest.raises(CsrlError, match="form a loop"):
        load_config(tmp_path / "loop1.yaml")
    (tmp_path / "orphan.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(CsrlError, match="base recipe .*nowhere.yaml does not exist"):
        load_config(tmp_path / "orphan.yaml")


def test_promptbert_recipe_trains_and_evaluates_with_its_pooler(
    tiny_model_dir: Path, tiny_corpus: Path, fake_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "promptbert"
    argv = ["train", str(METHODS / "promptbert.yaml"), "--data-dir", str(fake_data_dir), "--no-before"]
    for s in _sets(tiny_model_dir, tiny_corpus, run_dir):
        argv += ["--set", s]
    assert main(argv) == 0, capsys.readouterr().err
    steps = [r for r in _records(run_dir) if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all("paradigm/gd_mean" in r for r in steps)
    assert [r["step"] for r in _records(run_dir) if "eval/stsb_dev_spearman" in r] == [2, 3]  # and at the end
    best = load_encoder(str(run_dir / "best"))  # what the final evaluation loaded
    assert best.pooler == "prompt" and best.config.prompt_template.startswith("This sentence of")
    assert best.config.prompt_denoise and best.config.prompt_denoise_at_inference is False
    modules = json.loads((run_dir / "best" / "modules.json").read_text())
    assert modules[1]["type"] == "csrl.models.st_modules.PromptMaskPooling"
    assert "Avg" in json.loads((run_dir / "results" / "sts_test.json").read_text())["reported"]


def test_sncse_recipe_trains_with_negations_as_the_third_view(
    tiny_model_dir: Path, tiny_corpus: Path, fake_data_dir: Path, tmp_path: Path
) -> None:
    cfg = load_config(METHODS / "sncse.yaml", _sets(tiny_model_dir, tiny_corpus, tmp_path / "sncse"))
    seen: list[list[str]] = []
    from csrl.models.encoder import Encoder

    tokenize = Encoder.tokenize

    def spy(self: Encoder, sentences: list[str], **kwargs: object) -> object:
        seen.append(list(sentences))
        return tokenize(self, sentences, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Encoder, "tokenize", spy)
        res = train(cfg, data_dir=fake_data_dir, log=lambda _: None)
    steps = [r for r in res.metrics if "train/loss" in r]
    assert len(steps) == 3 and all({"loss/infonce", "loss/bml", "loss/soft_gap", "paradigm/gd_mean"} <= set(r)
                                   for r in steps)  # fmt: skip
    from csrl.data.negation import negate

    flat = seen[0]
    assert len(flat) == 24 and flat[:8] == flat[8:16] and flat[16:] == [negate(s) for s in flat[:8]]
    assert res.after is not None and load_encoder(str(tmp_path / "sncse" / "best")).pooler == "prompt"


def test_sncse_refuses_pairs_and_triplets(tmp_path: Path, tiny_model_dir: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sent0,sent1\na cat sat,a cat was sitting\na dog ran,a dog was running\n")
    cfg = load_config(None, [f"model.model={tiny_model_dir}", f"data.train_files=[{pairs}]", "loss.name=sncse",
                             "train.batch_size=2"])  # fmt: skip
    with pytest.raises(CsrlError, match="trains on single sentences"):
        open_training_data(cfg, None, rank=0, world_size=1)


def test_prompt_and_sncse_steps_read_nothing_back(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prompt pooler (two templates, denoising on the fly) and SNCSE keep the trainer's rule: no tensor is
    read on the host inside ``training_step`` or ``log_step`` (as tests/train/test_guard.py checks for the default)."""
    import os
    import traceback
    from typing import Any

    import torch

    from csrl.train import loop

    inside = {"on": False}
    seen: list[str] = []
    for name in ("training_step", "log_step"):
        original = getattr(loop, name)

        def traced(*a: Any, _original: Any = original, **k: Any) -> Any:
            inside["on"] = True
            try:
                return _original(*a, **k)
            finally:
                inside["on"] = False

        monkeypatch.setattr(loop, name, traced)
    for name in ("__bool__", "__float__", "__int__", "item", "tolist", "__index__"):
        read = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *a: Any, _original: Any = read, _name: str = name, **k: Any) -> Any:
            frame = traceback.extract_stack(limit=2)[0]
            if inside["on"] and f"{os.sep}csrl{os.sep}" in frame.filename:
                seen.append(f"{_name} at {frame.filename}:{frame.lineno}")
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    sets = [*_sets(tiny_model_dir, tiny_corpus, tmp_path / "run"), "train.final_eval=false", "train.eval_every=0",
            "model.prompt_denoise=true"]  # fmt: skip
    res = loop.train(load_config(METHODS / "sncse.yaml", sets), log=lambda _: None)
    assert res.steps == 3 and not seen, seen
