"""The progress of a run: what a checkpoint's ``trainer_state.json`` holds besides weights, optimizer and RNG."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class RunState:
    """Where a run stands. ``epoch``/``position``: the next batch to read; ``best_*``: STS-B dev selection."""

    step: int = 0  # optimizer steps taken (skipped non-finite steps count)
    epoch: int = 0  # current pass over the corpus
    position: int = 0  # batches of ``epoch`` already read
    best_dev: float | None = None  # best STS-B dev Spearman x 100 so far
    best_step: int | None = None  # the step it was reached at

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


__all__ = ["RunState"]
