"""A pretraining run owns its folder, as a training run does (:mod:`csrl.train.run_lock`).

The lock is the trainer's (:func:`csrl.train.run_lock.acquire_lock`, held by the process for the whole run).
A new run refuses a folder that holds a run's records; a resume (``--resume RUN_DIR``) compares the saved
``config.json`` with the new config by the trainer's rule (:func:`csrl.train.config.resume_changes`: logging,
evaluation, checkpoint, probe cadences and threads may change, anything that changes the trajectory is
refused with the difference) and the training data by content (``data_fingerprint.json``: size and sha256
of every file, :func:`csrl.train.run_lock.data_fingerprint`). Read-only until :meth:`PretrainFolder.commit`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csrl.errors import CsrlError
from csrl.pretrain.config import PretrainConfig, build_pretrain_config
from csrl.train.config import resume_changes
from csrl.train.run_lock import FINGERPRINT, RESUME_LOG, data_fingerprint
from csrl.utils.io import atomic_write_json, atomic_write_text

__all__ = ["RECORDS", "PretrainFolder", "check_pretrain_folder"]

RECORDS = ("config.json", "metrics.jsonl", "checkpoints", "model", FINGERPRINT)
"""What makes a folder hold a pretraining run."""


@dataclass
class PretrainFolder:
    """What :func:`check_pretrain_folder` found; :meth:`commit` writes it once the input is checked."""

    path: Path
    cfg: PretrainConfig
    resume: bool
    fingerprint: dict[str, Any]
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def commit(self, log: Callable[[str], None]) -> None:
        """Write ``config.json`` and the data fingerprint (a new run), or record a resume's cadence changes."""
        d = self.path
        d.mkdir(parents=True, exist_ok=True)
        if not self.resume or self.changes or not (d / "config.json").exists():
            atomic_write_json(d / "config.json", self.cfg.to_dict())
        if not (d / FINGERPRINT).exists():
            atomic_write_json(d / FINGERPRINT, self.fingerprint)
        if self.resume:
            entry = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "changes": {k: list(v) for k, v in self.changes.items()},
            }
            old = (d / RESUME_LOG).read_text(encoding="utf-8") if (d / RESUME_LOG).exists() else ""
            atomic_write_text(d / RESUME_LOG, old + json.dumps(entry) + "\n")
            for k, (a, b) in self.changes.items():
                log(f"resume: {k}: {a!r} -> {b!r} (recorded in {RESUME_LOG})")


def _same_data(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    old, new = saved.get("files", []), now["files"]
    for a, b in zip(old, new, strict=False):
        if (a["bytes"], a["sha256"]) != (b["bytes"], b["sha256"]):
            return f"{b['path']} differs from {a['path']} when the run started ({a['bytes']} -> {b['bytes']} bytes)"
    return None if len(old) == len(new) else f"{len(old)} data file(s) when the run started, {len(new)} now"


def _check_resume(folder: PretrainFolder) -> None:
    d = folder.path
    if not (d / "config.json").is_file():
        raise CsrlError(f"cannot resume: {d} holds no pretraining run", hint="start it with csrl pretrain CONFIG")
    try:
        saved = build_pretrain_config(json.loads((d / "config.json").read_text(encoding="utf-8")))
    except (ValueError, CsrlError) as exc:
        msg = exc.message if isinstance(exc, CsrlError) else str(exc)
        raise CsrlError(f"cannot resume: {d / 'config.json'} is not a pretraining config ({msg})") from None
    refused, allowed = resume_changes(saved.to_dict(), folder.cfg.to_dict())
    refused = {k: v for k, v in refused.items() if k not in ("data.heldout_files",)}  # compared by content below
    if refused:
        diff = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise CsrlError(
            f"cannot resume {d}: these settings differ from the run's and would change its trajectory:\n{diff}",
            hint="resume with the run's settings, or start a new run (--output-dir NEW_DIR); logging, evaluation, "
            "checkpoint and probe cadences may change on resume",
        )
    folder.changes = allowed
    if (d / FINGERPRINT).exists():
        change = _same_data(json.loads((d / FINGERPRINT).read_text(encoding="utf-8")), folder.fingerprint)
        if change is not None:
            raise CsrlError(
                f"cannot resume {d}: its data changed since the run started ({change})",
                hint="resume with the same files (compared by content), or start a new run",
            )


def check_pretrain_folder(cfg: PretrainConfig, files: Sequence[Path], *, resume: bool) -> PretrainFolder:
    """Check that ``cfg`` may write into its folder (nothing is written; see :meth:`PretrainFolder.commit`)."""
    if not cfg.output_dir.strip():
        raise CsrlError("output_dir is empty", hint="give the run its own folder, e.g. --output-dir runs/mlm")
    folder = PretrainFolder(Path(cfg.output_dir), cfg, resume, data_fingerprint(files))
    if resume:
        _check_resume(folder)
        return folder
    found = [name for name in RECORDS if (folder.path / name).exists()]
    if found:
        raise CsrlError(
            f"{folder.path} already holds a run ({', '.join(found)}); a new run would mix its records with the old",
            hint=f"continue it with csrl pretrain --resume {folder.path}, or choose another --output-dir",
        )
    return folder
