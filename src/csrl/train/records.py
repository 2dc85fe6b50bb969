"""What a run writes as it goes: the metrics log (``metrics.jsonl`` + TensorBoard) and the progress bar."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from csrl.train.trackers import Tracker
from csrl.utils.io import atomic_write_text


class MetricsLog:
    """Append-only JSONL log, copied to the trackers (:mod:`csrl.train.trackers`); on resume, steps after the
    checkpoint are dropped from the file."""

    def __init__(
        self, path: Path, *, resume_step: int | None, trackers: Sequence[Tracker] = (), write: bool = True
    ) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._fh: Any = None
        self.trackers = list(trackers)
        if not write:  # a non-main rank: keep records in memory, never touch rank 0's file
            return
        if resume_step is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if rec.get("step", 0) <= resume_step:
                    self.records.append(rec)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        elif path.exists():
            path.unlink()
        self._fh = path.open("a", encoding="utf-8")

    def log(self, step: int, values: dict[str, float]) -> None:
        rec = {"step": step, **{k: float(v) for k, v in values.items()}}
        self.records.append(rec)
        if self._fh is None:
            return
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        for tracker in self.trackers:
            tracker.log(step, values)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def progress_bar(total: int, start: int, *, enabled: bool) -> Callable[[int, float], None]:
    """``update(step, loss)`` for a tqdm bar over the steps (``update(-1, 0)`` closes it); a no-op when disabled,
    and in pipes or after ``set_quiet()`` (:func:`csrl.utils.progress.progress_enabled`)."""
    from csrl.utils.progress import progress_enabled

    if not (enabled and progress_enabled()):
        return lambda step, loss: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def update(step: int, loss: float) -> None:
        if step < 0:
            bar.close()
            return
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}")

    return update


__all__ = ["MetricsLog", "progress_bar"]
