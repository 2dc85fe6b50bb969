from __future__ import annotations

from pathlib import Path

import pytest

from csrl.errors import CsrlError
from csrl.train.config import RunConfig, apply_overrides, build_config, load_config

_ROOT = Path(__file__).parents[2] / "configs"
# training recipes (the pretrain-*.yaml recipes are `csrl pretrain` configs: tests/pretrain dry-runs them)
CONFIGS = sorted(
    p
    for p in [*_ROOT.glob("*.yaml"), *_ROOT.glob("losses/*.yaml"), *_ROOT.glob("methods/*.yaml")]
    if not p.name.startswith("pretrain-")
)


def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["train.lr=1e-5", "loss.temperature=0.1", "model.pooler=avg", "data.train_files=[a,b]"])
    assert cfg.train.lr == 1e-5 and cfg.loss.params == {"temperature": 0.1}
    assert cfg.model.pooler == "avg" and cfg.data.train_files == ("a", "b")


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lrr=1", "unknown config key 'train.lrr'"),
        ("train.batch_size=abc", "expected an integer"),
        ("loss.temp=0.1", "has no parameter 'temp'"),
        ("loss.name=nope", "unknown loss 'nope'"),
        ("model.pooler=maxx", "unknown pooler"),
        ("train.precision=fp8", "train.precision"),
        ("train.lr=-1", "train.lr must be > 0"),
        ("loss.temperature=0", "temperature"),
        ("nokey", "is not key=value"),
    ],
)
def test_bad_settings_are_user_errors(override: str, message: str) -> None:
    with pytest.raises(CsrlError) as err:
        cfg = load_config(None, [override])
        from csrl.losses import build_loss

        build_loss(cfg.loss.name, **dict(cfg.loss.params))
    assert message in str(err.value)


def test_unknown_key_suggests_the_close_one() -> None:
    with pytest.raises(CsrlError) as err:
        build_config(apply_overrides({}, ["train.batchsize=3"]))
    assert "did you mean train.batch_size" in (err.value.hint or "")


def test_resolved_config_round_trips() -> None:
    cfg = load_config(None, ["loss.temperature=0.2"])
    assert build_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_recipe_dry_runs(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from csrl.cli.main import main

    assert main(["train", str(path), "--dry-run"]) == 0
    assert "validates" in capsys.readouterr().err


# ----------------------------------------------------------------------------- checked before the model loads
def _no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    from csrl.models.encoder import Encoder

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(Encoder, "from_pretrained", refuse)


def _run_cfg(model: Path, corpus: Path, out: Path, *sets: str) -> RunConfig:
    return load_config(None, [f"model.model={model}", f"data.train_files=[{corpus}]", f"output_dir={out}",
                              "train.batch_size=4", "train.max_steps=2", "train.progress=false", *sets])  # fmt: skip


def _data_without(data: Path, tmp: Path, *rels: str) -> Path:
    import shutil

    d = tmp / "data"
    shutil.copytree(data, d)
    for rel in rels:
        (d / rel).unlink()
    return d


@pytest.mark.parametrize(
    "missing,sets,needle",
    [
        (["sts/stsb/sts-dev.csv"], ["train.eval_every=1", "train.final_eval=false"], "sts-dev.csv"),
        (["sts/sts16/STS.gs.set.txt"], ["train.eval_every=0", "train.final_eval=true"], "STS.gs.set.txt"),
        (
            ["sts/stsb/raw/sts-test.csv", "sts/stsb/sts-test.csv"],
            ["train.eval_every=0", "train.final_eval=false", "train.dynamics_every=1"],
            "sts-test.csv",
        ),
    ],
    ids=["dev for eval_every", "test sets for final_eval", "probe for dynamics_every"],
)
def test_the_data_folder_is_checked_before_the_model_loads(
    missing: list[str],
    sets: list[str],
    needle: str,
    tiny_model_dir: Path,
    tiny_corpus: Path,
    fake_data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from csrl.train.loop import train

    data = _data_without(fake_data_dir, tmp_path, *missing)
    _no_model_loading(monkeypatch)
    with pytest.raises(CsrlError) as err:
        train(_run_cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", *sets), data_dir=data)
    assert needle in err.value.message and "not found" in err.value.message
    assert "CSRL_DATA_DIR" in (err.value.hint or "")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_check_sts_files_stats_what_each_need_reads(fake_data_dir: Path, tmp_path: Path) -> None:
    from csrl.data.sts import STS_TASKS, check_sts_files

    check_sts_files(fake_data_dir, {*STS_TASKS, "stsb:dev", "sickr:train", "analysis"})  # all there: no error
    check_sts_files(tmp_path / "nowhere", set())  # nothing needed, nothing checked
    with pytest.raises(CsrlError, match="data folder not found"):
        check_sts_files(tmp_path / "nowhere", {"stsb:dev"})
    with pytest.raises(CsrlError, match="unknown split"):
        check_sts_files(fake_data_dir, {"stsb:validation"})
    data = _data_without(fake_data_dir, tmp_path, "sts/stsb/raw/sts-test.csv")
    check_sts_files(data, {"analysis"})  # the probe falls back on SentEval's copy of STS-B test
    (data / "sts" / "sts13" / "STS.gs.set.txt").unlink()
    (data / "sts" / "stsb" / "sts-dev.csv").unlink()
    with pytest.raises(CsrlError) as err:
        check_sts_files(data, {"STS13", "stsb:dev", "STS12"})
    assert "STS files not found" in err.value.message
    assert "STS.gs.set.txt" in err.value.message and "sts-dev.csv" in err.value.message
    assert "sts12" not in err.value.message


def test_model_limits_come_from_the_model_config(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The tiny BERT embeds 128 positions, a RoBERTa-style config 2 fewer than it declares (padding offset)."""
    from transformers import RobertaConfig

    from csrl.models.encoder import EncoderConfig, check_model_limits, model_limits

    assert model_limits(str(tiny_model_dir)) == (128, 2)
    roberta = tmp_path / "roberta"
    RobertaConfig(max_position_embeddings=34, pad_token_id=1, num_hidden_layers=3).save_pretrained(roberta)
    assert model_limits(str(roberta)) == (32, 3)
    check_model_limits(EncoderConfig(model=str(roberta)), {"data.max_length": 32, "model.max_length": None})
    with pytest.raises(CsrlError, match=r"data.max_length=33 is more than the 32 positions"):
        check_model_limits(EncoderConfig(model=str(roberta)), {"data.max_length": 33})
    with pytest.raises(CsrlError, match="is not a layer"):
        check_model_limits(EncoderConfig(model=str(roberta), first_last_layers=(0, 4)), {})
    check_model_limits(EncoderConfig(model=str(roberta), first_last_layers=(-4, 3)), {})
    with pytest.raises(CsrlError, match="is not a layer"):
        check_model_limits(EncoderConfig(model=str(roberta), first_last_layers=(-5, 3)), {})


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["data.max_length=129"], "data.max_length=129 is more than the 128 positions"),
        (["model.max_length=200"], "model.max_length=200 is more than the 128 positions"),
        (["model.pooler=first_last_avg", "model.first_last_layers=[0,3]"], "3 is not a layer"),
        (["train.warmup_steps=3"], "train.warmup_steps=3 is longer than the run (2 steps)"),
    ],
    ids=["data.max_length", "model.max_length", "first_last_layers", "warmup_steps"],
)
def test_model_and_run_limits_fail_before_the_model_loads(
    sets: list[str],
    needle: str,
    tiny_model_dir: Path,
    tiny_corpus: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from csrl.train.loop import train

    _no_model_loading(monkeypatch)
    cfg = _run_cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", "train.eval_every=0", "train.final_eval=false", *sets)
    with pytest.raises(CsrlError) as err:
        train(cfg)
    assert needle in err.value.message


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.log_every=0", "train.log_every must be >= 1, got 0"),
        ("train.seed=-1", "train.seed must be >= 0"),
        ("train.device=gpu", "train.device is not a device name"),
        ("train.weight_decay=.nan", "train.weight_decay must be a finite number >= 0"),
        ("train.batch_size=2000000", "train.batch_size must be >= 1 and <= 1_048_576"),
        ("data.format=xml", "data.format must be one of auto, text, csv, tsv, jsonl"),
        ("model.first_last_layers=[1]", "expected a list of 2 values"),
        ("model.head_init_std=-1", "model.head_init_std must be > 0"),
        ("loss.temperature=.inf", "loss.temperature must be a finite number"),
        ("train.dynamics_every=3", "not a multiple of train.log_every=2"),
    ],
)
def test_values_that_used_to_crash_are_user_errors(override: str, message: str) -> None:
    with pytest.raises(CsrlError) as err:
        load_config(None, ["train.log_every=2", override] if "dynamics" in override else [override])
    assert message in err.value.message
    if "must be" in message:
        assert err.value.hint  # the field's help


def test_zero_means_off_where_declared() -> None:
    cfg = load_config(None, ["train.eval_every=0", "train.checkpoint_every=0", "train.paradigm_every=0"])
    assert (cfg.train.eval_every, cfg.train.checkpoint_every, cfg.train.paradigm_every) == (0, 0, 0)
