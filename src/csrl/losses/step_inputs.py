"""What a loss asks the trainer to build for it besides the batch's views (ESimCSE, SimCSE++).

Most losses see only ``(z1, z2, hard_neg)``. A few methods change how the inputs of the loss are made, and
their loss object says so through ``step_inputs() -> StepInputs``; :mod:`csrl.train.methods` reads it and
builds the machinery (the loss never holds the encoder):

- ``dup_rate`` > 0: ESimCSE's word repetition of the positive view (:mod:`csrl.data.augment`);
- ``queue_ratio`` > 0: ESimCSE's momentum encoder (EMA coefficient ``momentum``) and a FIFO queue of its
  embeddings of past batches, ``queue_ratio`` x the global batch size, passed to the loss as ``queue=``
  (:mod:`csrl.train.momentum`);
- ``clean_view``: SimCSE++'s dropout-free forward of the anchors' sentences, passed as ``clean=``.

A loss without ``step_inputs`` needs nothing (:func:`step_inputs` returns the empty request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepInputs:
    """Extra inputs a loss needs (all off by default)."""

    dup_rate: float = 0.0  # ESimCSE: repeat subwords of view 1 at this maximal rate; 0 = off
    queue_ratio: float = 0.0  # ESimCSE: momentum queue of queue_ratio x batch_size embeddings; 0 = off
    momentum: float = 0.995  # ESimCSE: EMA coefficient of the momentum encoder (with queue_ratio > 0)
    clean_view: bool = False  # SimCSE++: a dropout-off forward of view 0, passed to the loss as clean=

    @property
    def any(self) -> bool:
        return self.dup_rate > 0 or self.queue_ratio > 0 or self.clean_view


def step_inputs(loss: Any) -> StepInputs:
    """The loss's request (``loss.step_inputs()``), or :class:`StepInputs` () when it declares none."""
    declared = getattr(loss, "step_inputs", None)
    out = declared() if callable(declared) else StepInputs()
    if not isinstance(out, StepInputs):
        raise TypeError(f"{type(loss).__name__}.step_inputs() must return a StepInputs, got {out!r}")
    return out


__all__ = ["StepInputs", "step_inputs"]
