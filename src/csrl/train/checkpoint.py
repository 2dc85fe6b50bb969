"""Resumable checkpoints: everything needed to continue a run bit-identically.

``checkpoints/step-0000125/`` holds the encoder and head weights, the optimizer and grad-scaler states,
every RNG state (python, numpy, torch CPU and CUDA: dropout), the data position and the trainer state
(step, best dev score). Each is written into a temporary folder and renamed into place, so a kill at any
moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from csrl.utils.io import atomic_dir

PREFIX = "step-"


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


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler_state: dict[str, Any] | None,
    trainer_state: dict[str, Any],
    keep: int,
) -> Path:
    path = root / f"{PREFIX}{step:07d}"
    with atomic_dir(path) as tmp:
        weights = {k: v.detach().contiguous().cpu().clone() for k, v in model.state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scaler": scaler_state, "rng": rng_state()},
            tmp / "state.pt",
        )
        (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=2))
    prune(root, keep)
    return path


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    done = [
        p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "trainer_state.json").exists()
    ]
    return sorted(done, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1] if ckpts else None


def prune(root: Path, keep: int) -> None:
    """Keep the last ``keep`` checkpoints; remove temporaries left by a killed write."""
    for p in list_checkpoints(root)[: -max(keep, 1)]:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(f".{PREFIX}*"):
        shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights and optimizer; returns the trainer state, the scaler state and the RNG state."""
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    blob = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    trainer = json.loads((path / "trainer_state.json").read_text())
    return {"trainer": trainer, "scaler": blob["scaler"], "rng": blob["rng"]}
