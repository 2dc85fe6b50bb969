"""csrl: contrastive sentence representation learning.

Train sentence encoders with contrastive and non-contrastive objectives, evaluate them with the
SentEval/SimCSE STS protocol, and explain the geometry they learn. The public API (``docs/api.md``)::

    import csrl

    enc = csrl.load_encoder("embedded:all-MiniLM-L6-v2", pooler="mean")
    vectors = csrl.encode(enc, ["A man is playing a guitar.", "Someone plays music."])
    result = csrl.evaluate_encoder(enc, data_dir="../shared/data")          # the 7 STS test sets
    run = csrl.train_encoder("configs/quickstart-cpu.yaml", overrides=["train.max_steps=10"])

Names are imported on first use, so ``import csrl`` (and every ``csrl`` command) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "load_encoder": "csrl.api",
    "encode": "csrl.api",
    "evaluate_encoder": "csrl.api",
    "train_encoder": "csrl.api",
    "as_config": "csrl.api",
    "analyze": "csrl.api",
    "simulate_paradigm": "csrl.api",
    "pretrain_encoder": "csrl.api",
    "push_to_hub": "csrl.api",
    "fit_posthoc": "csrl.api",
    "compare_analyses": "csrl.api",
    "pretrain_init": "csrl.api",
    "write_report": "csrl.api",
    "Encoder": "csrl.models.encoder",
    "RunConfig": "csrl.train.config",
    "load_config": "csrl.train.config",
    "RunResult": "csrl.train.loop",
    "StepInfo": "csrl.train.callbacks",
    "Evaluation": "csrl.pipelines.evaluate",
    "Loss": "csrl.losses.registry",
    "LossOutput": "csrl.losses.registry",
    "register_loss": "csrl.losses.registry",
    "build_loss": "csrl.losses.registry",
    "loss_traits": "csrl.losses.registry",
    "register_metric": "csrl.analysis.registry",
    "MTEBEncoder": "csrl.interop.mteb",
    "CsrlError": "csrl.errors",
}

__all__ = [
    "__version__",
    "load_encoder",
    "encode",
    "evaluate_encoder",
    "train_encoder",
    "as_config",
    "analyze",
    "simulate_paradigm",
    "pretrain_encoder",
    "push_to_hub",
    "fit_posthoc",
    "compare_analyses",
    "pretrain_init",
    "write_report",
    "Encoder",
    "RunConfig",
    "load_config",
    "RunResult",
    "StepInfo",
    "Evaluation",
    "Loss",
    "LossOutput",
    "register_loss",
    "build_loss",
    "loss_traits",
    "register_metric",
    "MTEBEncoder",
    "CsrlError",
]

if TYPE_CHECKING:  # static names for type checkers and IDEs
    from csrl.analysis.registry import register_metric
    from csrl.api import (
        analyze,
        as_config,
        encode,
        evaluate_encoder,
        fit_posthoc,
        load_encoder,
        pretrain_encoder,
        push_to_hub,
        simulate_paradigm,
        train_encoder,
    )
    from csrl.errors import CsrlError
    from csrl.interop.mteb import MTEBEncoder
    from csrl.losses.registry import Loss, LossOutput, build_loss, loss_traits, register_loss
    from csrl.models.encoder import Encoder
    from csrl.pipelines.evaluate import Evaluation
    from csrl.train.callbacks import StepInfo
    from csrl.train.config import RunConfig, load_config
    from csrl.train.loop import RunResult


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'csrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
