"""Resumable checkpoints: everything needed to continue a run bit-identically, and proof that it is whole.

``checkpoints/step-0000125/`` holds the encoder and head weights (``model.safetensors``), the optimizer and
grad-scaler states, every RNG state (python, numpy, torch CPU and CUDA: dropout) and, for methods that keep
more than the model (ESimCSE's momentum encoder and queue), their state in ``state.pt``, and the trainer
state (step, data position, best dev score) in ``trainer_state.json``. ``manifest.json``, written last, lists
each file with its size and sha256.

A checkpoint is built in a temporary folder and renamed into place (:func:`csrl.utils.io.atomic_dir`), so
a kill at any moment leaves either the previous checkpoint or the new one, never half of one; older
checkpoints are pruned only once the new one is complete. Damage after the fact (a truncated copy, a bad
sector, a file edited by hand) is caught by the manifest: :func:`load_checkpoint` verifies it, and
:func:`resume_checkpoint` falls back to the newest intact checkpoint, saying which one was skipped and why.

Checkpoints written before manifests existed (a run in which no checkpoint has one) are accepted with a
note, unverified; in a run that has manifests, a checkpoint without one is treated as damaged.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from csrl.errors import CsrlError
from csrl.utils.io import DiskFullError, atomic_dir

PREFIX = "step-"
MANIFEST = "manifest.json"
DAMAGED_PREFIX = "damaged-"  # damaged checkpoints are renamed aside, never deleted
FILES = ("model.safetensors", "state.pt", "trainer_state.json")
MANIFEST_FORMAT = 1

__all__ = [
    "MANIFEST",
    "PREFIX",
    "checkpoint_problem",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "prune",
    "resume_checkpoint",
    "rng_state",
    "save_checkpoint",
    "save_run_checkpoint",
    "set_rng_state",
]


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _checkpoint_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) if path.is_dir() else 0


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler_state: dict[str, Any] | None,
    trainer_state: dict[str, Any],
    keep: int,
    method_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``root/step-NNNNNNN`` atomically (manifest last), then prune to the last ``keep`` checkpoints.

    ``method_state``: what a method keeps besides the model (ESimCSE's momentum encoder and queue,
    :meth:`csrl.train.methods.Method.state_dict`), stored in ``state.pt`` under ``"method"`` when given.

    Each file is serialised in memory and written with plain file writes, so that a full disk surfaces as
    ``ENOSPC`` (:class:`~csrl.utils.io.DiskFullError`, naming the previous checkpoint, which stays intact).
    """
    path = root / f"{PREFIX}{step:07d}"
    previous = latest_checkpoint(root)
    expected = _checkpoint_bytes(previous) if previous is not None else None  # checkpoints keep their size

    def blobs() -> Any:  # one file in memory at a time
        weights = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
        yield "model.safetensors", save_safetensors(weights)
        buf = io.BytesIO()
        blob = {"optimizer": optimizer.state_dict(), "scaler": scaler_state, "rng": rng_state()}
        torch.save(blob if method_state is None else {**blob, "method": method_state}, buf)
        yield "state.pt", buf.getbuffer()
        yield "trainer_state.json", json.dumps({**trainer_state, "step": step}, indent=2).encode()

    try:
        with atomic_dir(path, expected_bytes=expected) as tmp:
            files: dict[str, dict[str, Any]] = {}
            for name, data in blobs():
                (tmp / name).write_bytes(data)
                files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            manifest = {"format": MANIFEST_FORMAT, "step": step, "files": files}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")  # last: its presence means whole
    except DiskFullError as exc:
        kept = f"the previous checkpoint {previous} is intact" if previous is not None else "no checkpoint was lost"
        raise DiskFullError(
            f"{exc.message} (writing the checkpoint of step {step})",
            hint=f"{kept}; free some space, then resume with csrl train --resume {root.parent}",
        ) from None
    prune(root, keep)
    return path


def save_run_checkpoint(
    root: Path,
    state: Any,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    keep: int,
    main: bool,
    method_state: dict[str, Any] | None = None,
) -> None:
    """A run's resumable checkpoint at ``state.step`` (a :class:`~csrl.train.state.RunState`): rank 0 writes
    it, every rank waits. Shared by the contrastive trainer and ``csrl pretrain``."""
    from csrl.train import distributed as dist

    if main:
        save_checkpoint(
            root,
            state.step,
            model=model,
            optimizer=optimizer,
            scaler_state=scaler.state_dict() if scaler is not None else None,
            trainer_state=state.to_dict(),
            keep=keep,
            method_state=method_state,
        )
    dist.barrier()


def _step_of(p: Path) -> int | None:
    digits = p.name[len(PREFIX) :]
    return int(digits) if p.name.startswith(PREFIX) and digits.isdigit() else None


def list_checkpoints(root: Path) -> list[Path]:
    """Complete-looking checkpoints (``step-N/`` with a trainer state), oldest first; nothing is verified."""
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and _step_of(p) is not None and (p / "trainer_state.json").exists()]
    return sorted(done, key=lambda p: _step_of(p) or 0)


def latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint by step (cheap: not verified; see :func:`resume_checkpoint`)."""
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def prune(root: Path, keep: int) -> None:
    """Keep the last ``keep`` checkpoints; remove temporaries left by a killed write."""
    for p in list_checkpoints(root)[: -max(keep, 1)]:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(f".{PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with the checkpoint at ``path`` (missing manifest, missing, truncated or corrupt file), or
    None when every file matches its manifest entry (size and sha256)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        entries = {name: (int(files[name]["bytes"]), str(files[name]["sha256"])) for name in files}
    except FileNotFoundError:
        return f"it has no {MANIFEST} (its write did not finish, or it was copied incompletely)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its {MANIFEST} is unreadable ({type(exc).__name__}: {exc})"
    missing = [f for f in FILES if f not in entries]
    if missing:
        return f"its {MANIFEST} does not list {', '.join(missing)}"
    for name, (size, digest) in entries.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, the manifest says {size} (truncated or overwritten)"
        if _sha256(f) != digest:
            return f"{name} does not match its sha256 in the manifest (corrupt)"
    return None


def _set_aside(path: Path) -> Path:
    target = path.with_name(DAMAGED_PREFIX + path.name)
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{DAMAGED_PREFIX}{path.name}.{n}")
    path.rename(target)
    return target


def resume_checkpoint(root: Path, *, log: Callable[[str], None], set_aside: bool = True) -> Path | None:
    """The newest intact checkpoint under ``root`` (None when there is none at all).

    Newer damaged ones are named in ``log`` with the reason and, with ``set_aside`` (the process that owns
    the run folder), renamed to ``damaged-step-N`` so that pruning can never keep them over good ones. A
    run whose checkpoints are all damaged is refused. A run from before manifests (no checkpoint has one)
    resumes from its newest checkpoint unverified, with a note.
    """
    ckpts = list_checkpoints(root)
    if not ckpts:
        return None
    if not any((p / MANIFEST).exists() for p in ckpts):
        log(f"note: {ckpts[-1]} has no {MANIFEST} (written before csrl verified checkpoints): loaded unverified")
        return ckpts[-1]
    damaged: list[str] = []
    for p in reversed(ckpts):
        problem = checkpoint_problem(p)
        if problem is None:
            if damaged:
                log(f"resuming from {p.name}, the newest intact checkpoint")
            return p
        where = p
        if set_aside:
            where = _set_aside(p)
        log(f"checkpoint {p.name} is damaged: {problem}" + (f"; moved to {where.name}" if set_aside else ""))
        damaged.append(f"{p.name}: {problem}")
    raise CsrlError(
        f"cannot resume: every checkpoint in {root} is damaged ({'; '.join(damaged)})",
        hint=f"start the run again with --overwrite (the old records are kept aside), or restore {root} from a backup",
    )


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, verify: bool = True
) -> dict[str, Any]:
    """Restore weights and optimizer; returns the trainer state, the scaler state, the RNG state and the method's
    state (``"method"``: None when the checkpoint has none).

    ``verify``: check the manifest first (a damaged checkpoint raises :class:`~csrl.errors.CsrlError` before
    anything is loaded); a checkpoint without manifest (written by an older csrl) is loaded unverified.
    """
    if verify and (path / MANIFEST).exists():
        problem = checkpoint_problem(path)
        if problem is not None:
            raise CsrlError(
                f"checkpoint {path} is damaged: {problem}",
                hint="resuming picks the newest intact checkpoint by itself (csrl train --resume RUN_DIR)",
            )
    try:
        weights = load_safetensors((path / "model.safetensors").read_bytes())
        blob = torch.load(io.BytesIO((path / "state.pt").read_bytes()), weights_only=False)
        trainer = json.loads((path / "trainer_state.json").read_text())
    except Exception as exc:  # only reachable for unverified (old) checkpoints
        raise CsrlError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})",
            hint=f"move it aside (e.g. rename it to {DAMAGED_PREFIX}{path.name}) to resume from the one before it",
        ) from None
    model.load_state_dict(weights)
    optimizer.load_state_dict(blob["optimizer"])
    return {"trainer": trainer, "scaler": blob["scaler"], "rng": blob["rng"], "method": blob.get("method")}
