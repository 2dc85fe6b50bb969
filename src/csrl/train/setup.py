"""Setting up a run: everything built once from the config and the seed, and the resume point.

:func:`set_up_run` builds, in an order that keeps runs reproducible and fails early: the input first (bad
data or settings fail before the model is loaded or anything is written), then the loss, the seed, the
encoder, the run folder, the optimizer, and finally the state of a checkpoint when resuming.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.losses.registry import build_loss
from csrl.models.encoder import Encoder
from csrl.train import checkpoint as ckpt
from csrl.train import distributed as dist
from csrl.train.batches import TrainingData, open_training_data
from csrl.train.callbacks import Callback
from csrl.train.config import RunConfig
from csrl.train.geometry_probe import make_dynamics_callback
from csrl.train.records import MetricsLog
from csrl.train.state import RunState
from csrl.utils.io import atomic_write_json
from csrl.utils.precision import AutocastFactory, autocast_factory


@dataclass
class Run:
    """What a run is made of; built once by :func:`set_up_run` and read by every step."""

    cfg: RunConfig
    run_dir: Path
    data_dir: Path | None
    device: torch.device
    autocast: AutocastFactory
    data: TrainingData
    encoder: Encoder  # the model itself (checkpoints, evaluation, callbacks)
    model: nn.Module  # what the step calls: the encoder, or its DistributedDataParallel wrapper
    loss_fn: nn.Module
    params: list[Tensor]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # fp16 loss scaling
    total: int  # optimizer steps of the whole run
    metrics: MetricsLog
    callbacks: list[Callback]
    main: bool  # rank 0 (or the only process): logs, evaluates, writes
    resumed_from: Path | None
    log: Callable[[str], None]

    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            # under torchrun, init_from_env has already selected this process's LOCAL_RANK device
            return torch.device("cuda", torch.cuda.current_device() if dist.is_dist() else 0)
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CsrlError(f"train.device={name} but no CUDA device is available", hint="use train.device=cpu or auto")
    return dev


def total_steps(cfg: RunConfig, data: TrainingData) -> int:
    """``max_steps`` when set, never more than ``epochs`` passes over the corpus."""
    per_epoch = data.sampler.steps_per_epoch
    t = cfg.train
    return min(t.max_steps if t.max_steps is not None else per_epoch * t.epochs, per_epoch * t.epochs)


def _resume_point(run_dir: Path, resume: bool, log: Callable[[str], None]) -> Path | None:
    if not resume:
        return None
    last = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if last is None:
        if not (run_dir / "config.json").exists():
            raise CsrlError(f"cannot resume: {run_dir} holds no run", hint="start it with csrl train CONFIG")
        log(f"no checkpoint in {run_dir} yet: starting from the beginning")
    return last


Optimisation = tuple[nn.Module, list[Tensor], torch.optim.Optimizer, torch.amp.GradScaler | None]


def _optimise(cfg: RunConfig, encoder: Encoder, device: torch.device) -> Optimisation:
    """The stepped model (DDP-wrapped under torchrun), its trainable parameters, AdamW, the fp16 scaler."""
    t = cfg.train
    params: list[Tensor] = [p for p in encoder.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
    model: nn.Module = encoder
    if dist.is_dist():
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(encoder, device_ids=ids)
    if t.compile:
        encoder.backbone = torch.compile(encoder.backbone)  # type: ignore[assignment]
    return model, params, optimizer, scaler


def restore(
    path: Path, encoder: Encoder, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> RunState:
    """Weights, optimizer, scaler and every RNG from a checkpoint; returns its :class:`RunState`."""
    saved = ckpt.load_checkpoint(path, encoder, optimizer)
    if scaler is not None and saved["scaler"] is not None:
        scaler.load_state_dict(saved["scaler"])
    ckpt.set_rng_state(saved["rng"])
    return RunState.from_dict(saved["trainer"])


def set_up_run(
    cfg: RunConfig,
    *,
    data_dir: Path | None,
    resume: bool,
    callbacks: Sequence[Callback],
    log: Callable[[str], None],
) -> tuple[Run, RunState]:
    """Build the run and its starting state (a fresh one, or the newest checkpoint's when resuming)."""
    t = cfg.train
    run_dir = Path(cfg.output_dir)
    main = dist.is_main_process()
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = pick_device(t.device)
    autocast = autocast_factory(device, t.precision)
    resume_from = _resume_point(run_dir, resume, log)
    data = open_training_data(cfg, data_dir, rank=dist.rank(), world_size=dist.world_size())
    loss_fn = build_loss(cfg.loss.name, **dict(cfg.loss.params)).to(device)
    seed_everything(t.seed)
    encoder = Encoder.from_pretrained(cfg.model).to(device)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
    model, params, optimizer, scaler = _optimise(cfg, encoder, device)
    state = RunState()
    if resume_from is not None:
        state = restore(resume_from, encoder, optimizer, scaler)
        log(f"resumed from {resume_from} (step {state.step})")
    metrics = MetricsLog(
        run_dir / "metrics.jsonl", resume_step=state.step if resume else None, tensorboard=main, write=main
    )
    run = Run(cfg, run_dir, data_dir, device, autocast, data, encoder, model, loss_fn, params, optimizer, scaler,
              total_steps(cfg, data), metrics, list(callbacks), main, resume_from, log)  # fmt: skip
    probe = make_dynamics_callback(cfg, encoder, data_dir) if main else None
    if probe is not None:
        run.callbacks.append(probe)
        if resume_from is None:
            run.metrics.log(0, probe.initial(encoder))
    log(
        f"training {cfg.model.model} ({encoder.pooler}, head {encoder.head.kind}) with {cfg.loss.name} on "
        f"{data.n_records} records x {data.n_fields} field(s): {run.total} steps of {t.batch_size}, "
        f"{t.precision}, {device}"
    )
    return run, state


__all__ = ["Run", "pick_device", "restore", "seed_everything", "set_up_run", "total_steps"]
