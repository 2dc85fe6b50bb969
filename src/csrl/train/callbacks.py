"""What a training callback sees (:class:`StepInfo`) and what it is (:class:`Callback`).

Kept apart from the loop so that callbacks (e.g. :mod:`csrl.train.geometry_probe`) and the loop both
import it without a circle. The trainer calls every callback on logged steps, after the update, and
merges the returned values into ``metrics.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from torch import nn

from csrl.losses.registry import LossOutput
from csrl.models.encoder import Encoder
from csrl.train.step import Views


@dataclass
class StepInfo:
    """What a callback sees after each logged step: embeddings (detached), loss terms, the loss, the encoder."""

    step: int
    views: Views
    loss: LossOutput
    loss_fn: nn.Module
    encoder: Encoder


class Callback(Protocol):
    def __call__(self, info: StepInfo) -> dict[str, float] | None: ...


__all__ = ["Callback", "StepInfo"]
