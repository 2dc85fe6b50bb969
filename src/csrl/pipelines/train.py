"""``csrl train`` as a library function: resolve the config (a recipe, or a run folder to resume), train."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from csrl.errors import CsrlError
from csrl.train.callbacks import Callback
from csrl.train.config import RunConfig, apply_overrides, build_config, load_config
from csrl.train.loop import RunResult, train


def resolve_run_config(
    config: Path | str | None,
    overrides: Sequence[str] = (),
    *,
    resume: Path | str | None = None,
    output_dir: Path | str | None = None,
) -> RunConfig:
    """The checked :class:`RunConfig` of a new run (``config``: a YAML recipe) or of a run to resume.

    Resuming reads ``RUN_DIR/config.json`` and applies ``overrides`` on top; the run keeps its folder.
    """
    extra = list(overrides)
    if output_dir is not None:
        extra.append(f"output_dir={output_dir}")
    if resume is not None:
        run = Path(resume)
        if not (run / "config.json").exists():
            raise CsrlError(f"cannot resume: {run}/config.json not found", hint="pass the run folder of a started run")
        raw = json.loads((run / "config.json").read_text())
        return build_config(apply_overrides(raw, [*extra, f"output_dir={run}"]))
    if config is None:
        raise CsrlError(
            "csrl train needs a CONFIG file (or --resume RUN_DIR)", hint="e.g. csrl train configs/quickstart-cpu.yaml"
        )
    return load_config(Path(config), extra)


def train_run(
    config: Path | str | None,
    overrides: Sequence[str] = (),
    *,
    resume: Path | str | None = None,
    output_dir: Path | str | None = None,
    data_dir: Path | None = None,
    eval_before: bool = True,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
) -> RunResult:
    """Resolve the config and train (or resume) the run; see :func:`csrl.train.loop.train`.

    ``overwrite``: a folder that holds another run is taken over, its records moved aside (without it,
    such a folder is refused)."""
    cfg = resolve_run_config(config, overrides, resume=resume, output_dir=output_dir)
    return train(cfg, data_dir=data_dir, resume=resume is not None, overwrite=overwrite, eval_before=eval_before,
                 callbacks=callbacks)  # fmt: skip


__all__ = ["resolve_run_config", "train_run"]
