"""Fixtures shared by the tests of tests/train."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def no_dropout_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with dropout 0 (a deterministic function: a 2-rank run can replay one process)."""
    from tiny_bert import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert-nodrop"), dropout=0.0)
