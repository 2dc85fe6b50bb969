from __future__ import annotations

from pathlib import Path

import pytest

from csrl.errors import CsrlError
from csrl.train.config import apply_overrides, build_config, load_config

_ROOT = Path(__file__).parents[2] / "configs"
CONFIGS = sorted([*_ROOT.glob("*.yaml"), *_ROOT.glob("losses/*.yaml")])


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
        ("model.pooler=max", "unknown pooler"),
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
