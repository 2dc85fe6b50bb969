"""Experiment trackers: where a run's logged metrics go besides ``metrics.jsonl``.

``train.report_to`` names them: ``tensorboard`` (the default; skipped with a note when not installed),
``wandb`` and ``mlflow`` (optional extras: ``pip install "csrl[wandb]"`` / ``"csrl[mlflow]"``; an error
when asked for and not installed). Each receives exactly the values written to ``metrics.jsonl``, at
the same steps, from rank 0 only. The trackers' own settings come from their usual environment
variables (``WANDB_MODE=offline``, ``WANDB_API_KEY``, ``MLFLOW_TRACKING_URI``, ...), read by those
libraries themselves. A resumed run continues the same W&B / MLflow run: its id is kept in the run folder.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from csrl.errors import CsrlError
from csrl.utils.dotted import flatten

TRACKERS = ("tensorboard", "wandb", "mlflow")


class Tracker(Protocol):
    def log(self, step: int, values: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if math.isfinite(float(v))}


def _flat(config: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys with scalar values (lists and tuples as text), as MLflow's params want them."""
    scalar = int | float | str | bool
    return {k: v if isinstance(v, scalar) or v is None else str(v) for k, v in flatten(config).items()}


class TensorBoardTracker:
    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, values: Mapping[str, float]) -> None:
        for k, v in _finite(values).items():
            self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, config: Mapping[str, Any], project: str) -> None:
        import wandb

        id_file = run_dir / "wandb_run_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        self.run = wandb.init(
            project=project, name=run_dir.name, id=run_id, resume="allow", dir=str(run_dir), config=dict(config)
        )
        id_file.write_text(run_id + "\n")

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.run.log(_finite(values), step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    def __init__(self, run_dir: Path, config: Mapping[str, Any], project: str) -> None:
        import mlflow

        self.mlflow = mlflow
        id_file = run_dir / "mlflow_run_id.txt"
        mlflow.set_experiment(project)
        if id_file.exists():
            mlflow.start_run(run_id=id_file.read_text().strip())
        else:
            run = mlflow.start_run(run_name=run_dir.name)
            id_file.write_text(run.info.run_id + "\n")
            mlflow.log_params(_flat(config))

    def log(self, step: int, values: Mapping[str, float]) -> None:
        self.mlflow.log_metrics(_finite(values), step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def check_tracker_names(names: Sequence[str]) -> None:
    unknown = sorted(set(names) - set(TRACKERS))
    if unknown:
        raise CsrlError(f"train.report_to: unknown tracker(s) {', '.join(unknown)}", hint=f"choose from {TRACKERS}")


def open_trackers(
    names: Sequence[str], run_dir: Path, config: Mapping[str, Any], *, project: str = "csrl"
) -> tuple[list[Tracker], list[str]]:
    """The trackers in ``names`` and notes for the log (e.g. tensorboard not installed)."""
    check_tracker_names(names)
    trackers: list[Tracker] = []
    notes: list[str] = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            try:
                trackers.append(TensorBoardTracker(run_dir))
            except ImportError:
                notes.append("tensorboard is not installed: metrics go to metrics.jsonl only")
            continue
        try:
            trackers.append(WandbTracker(run_dir, config, project) if name == "wandb" else
                            MlflowTracker(run_dir, config, project))  # fmt: skip
        except ImportError:
            raise CsrlError(
                f"train.report_to includes {name}, which is not installed", hint=f'pip install "csrl[{name}]"'
            ) from None
        except Exception as exc:  # the tracker's own set-up (credentials, tracking URI, backend) failed
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CsrlError(
                f"could not start the {name} tracker: {first[:300]}",
                hint="check its settings (W&B: WANDB_MODE=offline or WANDB_API_KEY; MLflow: MLFLOW_TRACKING_URI), "
                "or drop it from train.report_to",
            ) from None
    return trackers, notes


__all__ = ["TRACKERS", "Tracker", "check_tracker_names", "open_trackers"]
