"""Training objectives: small pure functions over embeddings, thin registered modules, and the
unified gradient paradigm (GD, W, R) of Li, Zhang & Nie (ACL 2024).

Registered losses: infonce, arccon, mpt, met, mat (contrastive, papers.md 1.2), surrogate (1.5),
mhe, mhs, barlowtwins, vicreg (1.6, ``variant="ori" | "mod"``); presets of paper B's table in
:mod:`csrl.losses.presets`. Analysis: :mod:`csrl.losses.paradigm`, :mod:`csrl.losses.simulate`.
"""

from __future__ import annotations

from csrl.losses.registry import (
    LossOutput,
    build_loss,
    loss_class,
    loss_names,
    preset_names,
    register_loss,
    register_preset,
)

# Importing the loss modules registers them.
from csrl.losses import infonce  # noqa: E402,F401  isort: skip
from csrl.losses import arccon, triplet, surrogate  # noqa: E402,F401  isort: skip
from csrl.losses import alignment_uniformity, barlow, vicreg  # noqa: E402,F401  isort: skip
from csrl.losses import presets  # noqa: E402,F401  isort: skip
from csrl.losses.presets import PRESET_LR, PRESET_TRAINING  # noqa: E402  isort: skip

__all__ = [
    "PRESET_LR",
    "PRESET_TRAINING",
    "LossOutput",
    "build_loss",
    "loss_class",
    "loss_names",
    "preset_names",
    "register_loss",
    "register_preset",
]
