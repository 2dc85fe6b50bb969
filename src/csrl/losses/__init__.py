"""Training objectives: small pure functions over embeddings, thin registered modules, and the
unified gradient paradigm (GD, W, R) of Li, Zhang & Nie (ACL 2024)."""

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

__all__ = [
    "LossOutput",
    "build_loss",
    "loss_class",
    "loss_names",
    "preset_names",
    "register_loss",
    "register_preset",
]
