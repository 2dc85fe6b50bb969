"""Tiny pretraining configs for the tests of tests/pretrain (imported by name, as tests/train/ddp_helpers.py)."""

from __future__ import annotations

from pathlib import Path

from csrl.pretrain.config import PretrainConfig, load_pretrain_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "pretrain-tiny-test.yaml"


def tiny_config(corpus: Path, out: Path, *extra: str) -> PretrainConfig:
    """configs/pretrain-tiny-test.yaml on ``corpus``, into ``out``, with ``extra`` overrides."""
    return load_pretrain_config(TINY, [f"data.train_files=[{corpus}]", f"output_dir={out}", *extra])
