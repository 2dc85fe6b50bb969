"""Losses defined outside csrl: ``package.module:ClassName`` in Python, YAML, the CLI and sweeps."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from csrl.errors import CsrlError
from csrl.losses.registry import build_loss, loss_class, loss_params, loss_traits
from csrl.train.config import load_config

USER_LOSS = textwrap.dedent(
    '''
    import torch
    import torch.nn.functional as F
    from torch import nn

    from csrl.losses import LossOutput
    from csrl.losses.registry import Loss


    class CosineAlign(Loss):
        """1 - mean cosine of the positive pairs (no negatives: a deliberately tiny example)."""

        in_batch_negatives = False
        hard_negatives = False
        paper_defaults = {"scale": 1.0}

        def __init__(self, scale: float = 1.0) -> None:
            super().__init__()
            if not scale > 0:
                raise ValueError(f"scale must be > 0, got {scale}")
            self.scale = scale

        def forward(self, z1, z2, hard_neg=None):
            total = self.scale * (1 - F.cosine_similarity(z1, z2, dim=-1).mean())
            return LossOutput(total, {"align": total.detach()})


    class NotALoss:
        pass
    '''
)


@pytest.fixture()
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "mylosses"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "align.py").write_text(USER_LOSS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_user_loss_by_dotted_name(user_package: Path) -> None:
    name = "mylosses.align:CosineAlign"
    assert loss_class(name).__name__ == "CosineAlign"
    assert set(loss_params(name)) == {"scale"}
    traits = loss_traits(name)
    assert not traits.in_batch_negatives and not traits.has_closed_form and traits.paper_defaults == {"scale": 1.0}
    z = torch.randn(4, 8)
    out = build_loss(name, scale=2.0)(z, z)
    assert torch.allclose(out.total, torch.zeros(()), atol=1e-6)


def test_user_loss_in_a_config_is_type_checked(user_package: Path) -> None:
    cfg = load_config(None, ["loss.name=mylosses.align:CosineAlign", "loss.scale=3"])
    assert cfg.loss.params == {"scale": 3.0}
    with pytest.raises(CsrlError, match="scale"):
        load_config(None, ["loss.name=mylosses.align:CosineAlign", "loss.scale=-1"])
    with pytest.raises(CsrlError, match="no parameter 'temperature'"):
        load_config(None, ["loss.name=mylosses.align:CosineAlign", "loss.temperature=0.1"])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_pkg.mod:Loss", "cannot import module 'no_such_pkg'"),
        ("mylosses.align:Missing", "has no attribute 'Missing'"),
        ("mylosses.align:NotALoss", "not an nn.Module class"),
        ("simclr", "package.module:ClassName"),
    ],
)
def test_bad_user_loss_names(user_package: Path, name: str, message: str) -> None:
    with pytest.raises(CsrlError, match=message):
        loss_class(name)


def test_user_loss_from_the_cli_in_a_subprocess(user_package: Path, tmp_path: Path) -> None:
    """The CLI (and a sweep's cells, which are subprocesses) find the loss through PYTHONPATH."""
    config = tmp_path / "user.yaml"
    config.write_text("loss:\n  name: mylosses.align:CosineAlign\n  params: {scale: 0.5}\n")
    env = {**os.environ, "PYTHONPATH": f"{user_package}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "csrl", "train", str(config), "--dry-run"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert '"name": "mylosses.align:CosineAlign"' in proc.stdout and '"scale": 0.5' in proc.stdout


def test_user_loss_trains(user_package: Path, tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    from csrl.train.loop import train

    cfg = load_config(
        None,
        [
            f"model.model={tiny_model_dir}",
            f"data.train_files=[{tiny_corpus}]",
            f"output_dir={tmp_path / 'run'}",
            "loss.name=mylosses.align:CosineAlign",
            "train.batch_size=4",
            "train.max_steps=2",
            "train.eval_every=0",
            "train.final_eval=false",
            "train.progress=false",
        ],
    )
    res = train(cfg, log=lambda msg: None)
    losses = [r["loss/align"] for r in res.metrics if "loss/align" in r]
    assert res.steps == 2 and len(losses) == 2 and all(0 <= v <= 2 for v in losses)
