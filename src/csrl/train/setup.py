"""Setting up a run: everything built once from the config and the seed, and the resume point.

:func:`set_up_run` builds, in an order that keeps runs reproducible and fails early: the input first (bad
data or settings fail before the model is loaded or anything is written), then the loss, the seed, the
encoder, the run folder, the optimizer, and finally the state of a checkpoint when resuming. The run folder
is checked before anything is loaded (:func:`~csrl.train.run_lock.check_run_folder`: another run's records,
a resume that would change the trajectory or the data) and written after the input passed its checks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from csrl.data.sts import STS_TASKS, check_sts_files
from csrl.errors import CsrlError
from csrl.losses.registry import build_loss
from csrl.losses.step_inputs import step_inputs
from csrl.models.encoder import Encoder, check_model_limits
from csrl.train import checkpoint as ckpt
from csrl.train import distributed as dist
from csrl.train.batches import TrainingData, open_training_data, resolve_train_files
from csrl.train.callbacks import Callback
from csrl.train.compile import compile_backbone
from csrl.train.config import RunConfig
from csrl.train.diffcse import attach_diffcse
from csrl.train.geometry_probe import make_dynamics_callback
from csrl.train.guard import DeviceGuard, Guard, HostGuard, fused_adamw_supported, uses_fused
from csrl.train.methods import Method, build_method, check_method
from csrl.train.mlm_aux import attach_mlm_head
from csrl.train.records import MetricsLog
from csrl.train.run_lock import check_run_folder
from csrl.train.state import RunState
from csrl.train.trackers import open_trackers
from csrl.utils.precision import AutocastFactory, autocast_factory, resolve_precision


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
    guard: Guard  # the non-finite guard (csrl.train.guard): on the device with fused AdamW
    method: Method = field(default_factory=Method)  # a loss's extra inputs: ESimCSE, SimCSE++ (csrl.train.methods)

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
    last = ckpt.resume_checkpoint(run_dir / "checkpoints", log=log, set_aside=dist.is_main_process())
    if last is None:
        if not (run_dir / "config.json").exists():
            raise CsrlError(f"cannot resume: {run_dir} holds no run", hint="start it with csrl train CONFIG")
        log(f"no checkpoint in {run_dir} yet: starting from the beginning")
    return last


Optimisation = tuple[nn.Module, list[Tensor], torch.optim.Optimizer, torch.amp.GradScaler | None]


def _optimise(cfg: RunConfig, encoder: Encoder, device: torch.device) -> Optimisation:
    """The stepped model (DDP-wrapped under torchrun), its trainable parameters, AdamW (fused where the device
    has the kernel: one pass over the weights, and the non-finite guard's skip happens inside it), the fp16
    scaler."""
    t = cfg.train
    params: list[Tensor] = [p for p in encoder.parameters() if p.requires_grad]
    fused = t.fused_adamw and fused_adamw_supported(device)  # one kernel per step: ~7x faster on CPU (bench/)
    optimizer: torch.optim.Optimizer = torch.optim.AdamW(
        params, lr=t.lr, weight_decay=t.weight_decay, fused=True if fused else None
    )
    scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
    model: nn.Module = encoder
    if dist.is_dist():
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(encoder, device_ids=ids)
    compile_backbone(encoder, cfg, device)  # train.compile (csrl.train.compile); the weights stay where they are
    return model, params, optimizer, scaler


def make_guard(
    cfg: RunConfig,
    state: RunState,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    device: torch.device,
) -> Guard:
    """The non-finite guard: on the device with fused AdamW (no per-step synchronisation), else on the host
    (fp16's loss scaler owns the optimizer's ``found_inf``)."""
    t = cfg.train
    if scaler is None and uses_fused(optimizer):
        return DeviceGuard(device, stop=t.on_nonfinite == "stop", max_skips=t.max_nonfinite_skips,
                           consecutive=state.consecutive_skips)  # fmt: skip
    return HostGuard(scaler=scaler is not None)


def restore(
    path: Path,
    encoder: Encoder,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    *,
    method: Method | None = None,
) -> RunState:
    """Weights, optimizer, scaler, every RNG and the method's state (ESimCSE's momentum encoder and queue) from a
    checkpoint; returns its :class:`RunState`."""
    fused = [g.get("fused") for g in optimizer.param_groups]
    saved = ckpt.load_checkpoint(path, encoder, optimizer)
    if method is not None:
        method.load_state_dict(saved.get("method"))
    for group, ours in zip(optimizer.param_groups, fused, strict=True):  # the kernel is this run's choice
        group["fused"] = ours  # (the saved groups carry the one of the machine that wrote the checkpoint)
        if ours:
            group["foreach"] = None
    if scaler is not None and saved["scaler"] is not None:
        scaler.load_state_dict(saved["scaler"])
    ckpt.set_rng_state(saved["rng"])
    return RunState.from_dict(saved["trainer"])


def open_metrics(
    cfg: RunConfig, run_dir: Path, *, resume_step: int | None, main: bool, log: Callable[[str], None]
) -> MetricsLog:
    """``metrics.jsonl`` and the trackers of ``train.report_to`` (rank 0 writes; other ranks keep records only)."""
    if not main:
        return MetricsLog(run_dir / "metrics.jsonl", resume_step=resume_step, write=False)
    t = cfg.train
    trackers, notes = open_trackers(t.report_to, run_dir, cfg.to_dict(), project=t.tracking_project)
    for note in notes:
        log(note)
    return MetricsLog(run_dir / "metrics.jsonl", resume_step=resume_step, trackers=trackers)


def check_before_loading(cfg: RunConfig, data: TrainingData, data_dir: Path | None, *, main: bool) -> None:
    """What the run reads later, checked before the model loads: the STS files of its evaluations and probe
    (stat only; rank 0, which evaluates), the lengths and layers its backbone allows (its ``config.json``),
    and the warm-up against the run's length."""
    t = cfg.train
    if main:
        needs = ({"stsb:dev"} if t.eval_every else set()) | (set(STS_TASKS) if t.final_eval else set())
        check_sts_files(data_dir, needs | ({"analysis"} if t.dynamics_every else set()))
    lengths = {"data.max_length": cfg.data.max_length, "model.max_length": cfg.model.max_length}
    check_model_limits(cfg.model, lengths)
    total = total_steps(cfg, data)
    if t.warmup_steps > total:
        raise CsrlError(
            f"train.warmup_steps={t.warmup_steps} is longer than the run ({total} steps)",
            hint="lower train.warmup_steps (SimCSE: 0), or raise train.max_steps / train.epochs",
        )


def set_up_run(
    cfg: RunConfig,
    *,
    data_dir: Path | None,
    resume: bool,
    callbacks: Sequence[Callback],
    log: Callable[[str], None],
    overwrite: bool = False,
    loss: nn.Module | None = None,
) -> tuple[Run, RunState]:
    """Build the run and its starting state (a fresh one, or the newest intact checkpoint's when resuming).

    Rank 0 must hold the run folder's lock (:func:`csrl.train.loop.train` takes it); ``overwrite`` moves
    another run's records aside instead of refusing the folder."""
    t = cfg.train
    run_dir = Path(cfg.output_dir)
    main = dist.is_main_process()
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = pick_device(t.device)
    precision = resolve_precision(t.precision, device, setting="train.precision")  # auto: bf16 where native
    autocast = autocast_factory(device, precision)
    folder = None
    if main:  # refusals (another run's records, a changed trajectory or data) come before any loading
        files = resolve_train_files(cfg, data_dir)
        folder = check_run_folder(cfg, files, resume=resume, overwrite=overwrite, log=log)
    resume_from = _resume_point(run_dir, resume, log)
    data = open_training_data(cfg, data_dir, rank=dist.rank(), world_size=dist.world_size())
    check_before_loading(cfg, data, data_dir, main=main)  # the data folder, the model's limits, the warm-up
    loss_fn = (loss if loss is not None else build_loss(cfg.loss.name, **dict(cfg.loss.params))).to(device)
    check_method(cfg, step_inputs(loss_fn), data.n_fields)  # what ESimCSE / SimCSE++ cannot combine with
    seed_everything(t.seed)
    encoder = Encoder.from_pretrained(cfg.model).to(device)
    method = build_method(cfg, loss_fn, encoder, data)  # before the MLM head: the momentum copy needs none
    attach_mlm_head(encoder, cfg.model.model, weight=t.mlm_weight)  # SimCSE's MLM auxiliary loss (mlm_aux)
    attach_diffcse(encoder, t.diffcse_generator, weight=t.diffcse_weight)  # DiffCSE's discriminator (diffcse)
    if folder is not None:
        folder.commit(log, resumed_from=resume_from)
    model, params, optimizer, scaler = _optimise(cfg, encoder, device)
    state = RunState()
    if resume_from is not None:
        state = restore(resume_from, encoder, optimizer, scaler, method=method)
        log(f"resumed from {resume_from} (step {state.step})")
        if state.precision not in (None, precision):
            log(f"note: steps up to {state.step} ran in {state.precision}, this machine runs {precision}")
    state.precision = precision  # recorded in every checkpoint (config.json keeps train.precision as given)
    metrics = open_metrics(cfg, run_dir, resume_step=state.step if resume else None, main=main, log=log)
    run = Run(cfg, run_dir, data_dir, device, autocast, data, encoder, model, loss_fn, params, optimizer, scaler,
              total_steps(cfg, data), metrics, list(callbacks), main, resume_from, log, make_guard(cfg, state,
              optimizer, scaler, device), method)  # fmt: skip
    probe = make_dynamics_callback(cfg, encoder, data_dir) if main else None
    if probe is not None:
        run.callbacks.append(probe)
        if resume_from is None:
            run.metrics.log(0, probe.initial(encoder))
    log(
        f"training {cfg.model.model} ({encoder.pooler}, head {encoder.head.kind}) with {cfg.loss.name} on "
        f"{data.n_records} records x {data.n_fields} field(s): {run.total} steps of {t.batch_size}, "
        f"{precision}{' (auto)' if t.precision == 'auto' else ''}, {device}"
    )
    return run, state


__all__ = [
    "Run", "check_before_loading", "make_guard", "pick_device", "restore", "seed_everything", "set_up_run",
    "total_steps",
]  # fmt: skip
