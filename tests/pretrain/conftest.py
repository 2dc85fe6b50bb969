"""A tiny pretraining run (configs/pretrain-tiny-test.yaml on the tiny corpus), made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from pretrain_runs import tiny_config

from csrl.pretrain.loop import PretrainResult, pretrain


@pytest.fixture(scope="session")
def tiny_mlm_run(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path, fake_data_dir: Path) -> PretrainResult:
    """3 steps with the held-out evaluation and the geometry probe at step 3."""
    out = tmp_path_factory.mktemp("pretrain") / "run"
    cfg = tiny_config(tiny_corpus, out, "train.dynamics_every=3", "train.dynamics_probe_size=24")
    return pretrain(cfg, data_dir=fake_data_dir, log=lambda msg: None)
