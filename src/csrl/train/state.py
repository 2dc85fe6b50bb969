"""The progress of a run: what a checkpoint's ``trainer_state.json`` holds besides weights, optimizer and RNG."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_STEPS_KEPT = 100  # skipped step numbers kept in the state (the count is exact)


@dataclass
class RunState:
    """Where a run stands. ``epoch``/``position``: the next batch to read; ``best_*``: STS-B dev selection;
    ``*skips``/``nonfinite_steps``: skipped non-finite steps, so a resumed run counts on exactly. A checkpoint
    written before a field existed loads with the field's default."""

    step: int = 0  # optimizer steps taken (skipped non-finite steps count)
    epoch: int = 0  # current pass over the corpus
    position: int = 0  # batches of ``epoch`` already read
    best_dev: float | None = None  # best STS-B dev Spearman x 100 so far
    best_step: int | None = None  # the step it was reached at
    precision: str | None = None  # what train.precision resolved to on the machine that ran (auto: bf16 or fp32)
    nonfinite_skips: int = 0  # on_nonfinite=skip: steps skipped for a NaN/Inf loss or gradient, in total
    consecutive_skips: int = 0  # ... in a row up to now (max_nonfinite_skips stops the run)
    nonfinite_steps: list[int] = field(default_factory=list)  # the skipped steps (the last 100)

    def record_skip(self, step: int) -> None:
        """Count step ``step`` (as numbered in ``metrics.jsonl``) as skipped for a non-finite value."""
        self.nonfinite_skips += 1
        self.consecutive_skips += 1
        self.nonfinite_steps = [*self.nonfinite_steps, step][-_STEPS_KEPT:]

    def skip_summary(self) -> str:
        """``"3 non-finite step(s) skipped: steps 4-5, 9"`` (ranges of the last 100 skipped steps)."""
        runs: list[list[int]] = []
        for s in self.nonfinite_steps:
            if runs and s == runs[-1][1] + 1:
                runs[-1][1] = s
            else:
                runs.append([s, s])
        listed = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
        earlier = "..., " if self.nonfinite_skips > len(self.nonfinite_steps) else ""
        return f"{self.nonfinite_skips} non-finite step(s) skipped: steps {earlier}{listed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RunState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


__all__ = ["RunState"]
