"""Setting up a pretraining run: everything built once, in an order that fails early and stays reproducible.

:func:`set_up_pretraining`: device and precision, the run folder's checks (nothing written yet), the
tokenizer and the corpus (read, split, tokenised: bad input fails before a model is built), the seed, the
model, then the folder's records, the optimizer, the state of the newest intact checkpoint when resuming,
the metrics log, the fixed held-out batches and the geometry probe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder
from csrl.pretrain.config import PretrainConfig
from csrl.pretrain.data import PretrainData, open_pretrain_data, resolve_files
from csrl.pretrain.folder import check_pretrain_folder
from csrl.pretrain.masking import MaskedBatch, Masker
from csrl.pretrain.model import MODEL_DIR, MaskedLM, build_mlm, build_tokenizer, encoder_view
from csrl.train import checkpoint as ckpt
from csrl.train import distributed as dist
from csrl.train.geometry_probe import DynamicsCallback, positive_pairs, probe_sentences
from csrl.train.records import MetricsLog
from csrl.train.setup import pick_device, seed_everything
from csrl.train.state import RunState
from csrl.train.trackers import open_trackers
from csrl.utils.precision import AutocastFactory, autocast_factory, resolve_precision

__all__ = ["PretrainRun", "set_up_pretraining"]

Log = Callable[[str], None]
StepCallback = Callable[[int, dict[str, float]], dict[str, float] | None]
"""Called after each logged step with the step and its values; may return more values to log (or raise)."""


@dataclass
class PretrainRun:
    """What a pretraining run is made of; built once and read by every step."""

    cfg: PretrainConfig
    run_dir: Path
    device: torch.device
    precision: str
    autocast: AutocastFactory
    data: PretrainData
    masker: Masker
    heldout: list[MaskedBatch]  # masked once, the same at every evaluation
    mlm: nn.Module  # the *ForMaskedLM model (checkpoints, saving)
    tokenizer: Any
    model: nn.Module  # what a step calls: MaskedLM, or its DistributedDataParallel wrapper
    params: list[Tensor]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    total: int
    metrics: MetricsLog
    probe: DynamicsCallback | None
    probe_encoder: Encoder | None
    callbacks: list[StepCallback]
    main: bool
    log: Log

    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"


def _optimise(cfg: PretrainConfig, mlm: nn.Module, device: torch.device) -> tuple[nn.Module, list[Tensor], Any, Any]:
    """The stepped module (DDP-wrapped under torchrun), its parameters, AdamW (no decay on biases and
    LayerNorm weights, as BERT), and the fp16 scaler."""
    t = cfg.train
    named = [(n, p) for n, p in mlm.named_parameters() if p.requires_grad]
    no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n]
    decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n)]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=(0.9, t.adam_beta2), eps=t.adam_eps)
    scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
    model: nn.Module = MaskedLM(mlm)
    if dist.is_dist():
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model, [p for _, p in named], optimizer, scaler


def total_steps(cfg: PretrainConfig, data: PretrainData) -> int:
    per_epoch = data.steps_per_epoch
    t = cfg.train
    return min(t.max_steps if t.max_steps is not None else per_epoch * t.epochs, per_epoch * t.epochs)


def heldout_batches(cfg: PretrainConfig, data: PretrainData, masker: Masker) -> list[MaskedBatch]:
    """Up to ``data.heldout_sequences`` held-out sequences (a fixed draw), by length, masked once."""
    n = len(data.heldout)
    pick = np.sort(np.random.default_rng(0).permutation(n)[: cfg.data.heldout_sequences])
    seqs = sorted((data.heldout.get(int(i)) for i in pick), key=len)
    return masker.fixed(seqs, cfg.train.eval_batch_size) if seqs else []


def initial_mlm(cfg: PretrainConfig, tokenizer: Any) -> nn.Module:
    """The weights a run starts from: torch's RNG seeded with ``train.seed``, then :func:`build_mlm`
    (``csrl pretrain --init-only`` saves exactly these: a random-init baseline of the recipe's size)."""
    seed_everything(cfg.train.seed)
    return build_mlm(cfg, tokenizer)


def _probe(cfg: PretrainConfig, mlm: nn.Module, tokenizer: Any, data_dir: Path | None, run_dir: Path) -> Any:
    t = cfg.train
    if not t.dynamics_every:
        return None, None
    encoder = encoder_view(mlm, tokenizer, pooler=t.dynamics_pooler, name=str(run_dir / MODEL_DIR))
    from csrl.analysis.function_words import tokenizer_vocab

    vocab, special = tokenizer_vocab(tokenizer)
    probe = DynamicsCallback(
        probe_sentences(data_dir, t.dynamics_probe_size), every=t.dynamics_every,
        positive_pairs=positive_pairs(data_dir), vocab=vocab, special_tokens=special,
        batch_size=min(t.eval_batch_size, 128), seed=0,
        early_every=t.dynamics_early_every, early_until=t.dynamics_early_until,
    )  # fmt: skip
    return probe, encoder


def _restore(run_dir: Path, mlm: nn.Module, optimizer: Any, scaler: Any, log: Log) -> RunState | None:
    path = ckpt.resume_checkpoint(run_dir / "checkpoints", log=log)
    if path is None:
        return None
    saved = ckpt.load_checkpoint(path, mlm, optimizer)
    if scaler is not None and saved["scaler"] is not None:
        scaler.load_state_dict(saved["scaler"])
    ckpt.set_rng_state(saved["rng"])
    log(f"resumed from {path} (step {saved['trainer']['step']})")
    return RunState.from_dict(saved["trainer"])


def set_up_pretraining(
    cfg: PretrainConfig, *, data_dir: Path | None, resume: bool, callbacks: Sequence[StepCallback], log: Log
) -> tuple[PretrainRun, RunState]:
    """Build the run and its starting state (fresh, or the newest intact checkpoint's when resuming)."""
    t, d, run_dir, main = cfg.train, cfg.data, Path(cfg.output_dir), dist.is_main_process()
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = pick_device(t.device)
    precision = resolve_precision(t.precision, device, setting="train.precision")
    autocast = autocast_factory(device, precision)
    folder = None
    if main:  # refusals (another run's records, a changed trajectory or data) before any reading
        files = [*resolve_files(d.train_files, data_dir, allow_eval_text=d.allow_eval_text, setting="data.train_files"),
                 *resolve_files(d.heldout_files, data_dir, allow_eval_text=d.allow_eval_text,
                                setting="data.heldout_files")]  # fmt: skip
        folder = check_pretrain_folder(cfg, files, resume=resume)
    tokenizer = build_tokenizer(cfg)
    masker = Masker(tokenizer, probability=d.mlm_probability, whole_word=d.whole_word_masking)
    data = open_pretrain_data(cfg, tokenizer, data_dir, rank=dist.rank(), world_size=dist.world_size(), log=log)
    mlm = initial_mlm(cfg, tokenizer).to(device).train()  # the same on every rank
    total = total_steps(cfg, data)
    if t.warmup_steps > total:
        raise CsrlError(f"train.warmup_steps={t.warmup_steps} is longer than the run ({total} steps)",
                        hint="lower train.warmup_steps, or raise train.max_steps / train.epochs")  # fmt: skip
    probe, probe_encoder = _probe(cfg, mlm, tokenizer, data_dir, run_dir) if main else (None, None)
    if folder is not None:
        folder.commit(log)
    model, params, optimizer, scaler = _optimise(cfg, mlm, device)
    state = (_restore(run_dir, mlm, optimizer, scaler, log) if resume else None) or RunState()
    if dist.rank():  # other ranks: their own masks and dropout (rank 0 keeps the single-process stream)
        torch.manual_seed(t.seed + 7919 * dist.rank() + state.step)
    state.precision = precision
    trackers, notes = (
        open_trackers(t.report_to, run_dir, cfg.to_dict(), project=t.tracking_project) if main else ([], [])
    )
    for note in notes:
        log(note)
    metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=state.step if resume else None, trackers=trackers,
                         write=main)  # fmt: skip
    run = PretrainRun(cfg, run_dir, device, precision, autocast, data, masker, heldout_batches(cfg, data, masker),
                      mlm, tokenizer, model, params, optimizer, scaler, total, metrics, probe,
                      probe_encoder, list(callbacks), main, log)  # fmt: skip
    logged_start = any(r.get("step") == 0 for r in metrics.records)  # a resume before the first checkpoint
    if probe is not None and probe_encoder is not None and state.step == 0 and not logged_start:
        metrics.log(0, probe.probe(probe_encoder, step=0))
    return run, state
