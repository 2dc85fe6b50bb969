"""The pretraining loop: a plain loop over named steps, the twin of :mod:`csrl.train.loop`.

``pretrain(cfg)`` reads top to bottom in :func:`_pretrain`: set up the run
(:func:`~csrl.pretrain.setup.set_up_pretraining`), then for each step read and mask a batch, take one
training step (``encoder -> head on masked positions -> loss -> backward -> guard -> clip -> update``),
log, score the held-out slice every ``eval_every`` steps, checkpoint, and finally save the model. A
checkpoint holds :class:`~csrl.train.state.RunState` (step, epoch, position) with the weights, optimizer
and RNG states (masks and dropout), so a resumed run continues bit-identically.

Run directory layout::

    .lock                 held by the process pretraining (csrl.train.run_lock)
    config.json           the resolved PretrainConfig
    data_fingerprint.json size and sha256 of the corpus files (a resume with other data is refused)
    metrics.jsonl         mlm/loss, mlm/train_accuracy, train/lr, ... every log_every steps; mlm/accuracy and
                          mlm/heldout_loss (held-out) every eval_every steps; geometry/* (dynamics_every)
    checkpoints/step-N/   resumable state (last keep_checkpoints), verified by a manifest
    model/                the final *ForMaskedLM model and tokenizer (save_pretrained), README.md
    tensorboard/          when tensorboard is installed
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from csrl.errors import NonFiniteError
from csrl.pretrain.config import PretrainConfig
from csrl.pretrain.masking import MaskedBatch
from csrl.pretrain.model import MODEL_DIR, save_mlm
from csrl.pretrain.setup import PretrainRun, StepCallback, set_up_pretraining
from csrl.train import checkpoint as ckpt
from csrl.train import distributed as dist
from csrl.train.mlm_aux import MaskedLMOutput
from csrl.train.records import progress_bar
from csrl.train.run_lock import owned_run
from csrl.train.schedule import lr_at
from csrl.train.state import RunState
from csrl.train.step import grads_finite

__all__ = ["PretrainResult", "evaluate_heldout", "learning_rate", "pretrain", "training_step"]


@dataclass
class PretrainResult:
    run_dir: Path
    steps: int
    model_dir: Path | None  # None on ranks other than 0
    heldout: dict[str, float] | None  # the last held-out evaluation
    metrics: list[dict[str, Any]] = field(default_factory=list)


def pretrain(
    cfg: PretrainConfig,
    *,
    data_dir: Path | None = None,
    resume: bool = False,
    callbacks: Sequence[StepCallback] = (),
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
) -> PretrainResult:
    """Pretrain ``cfg`` in this process, or as one rank of a ``torchrun`` job (each rank reads
    ``batch_size / world_size`` sequences; DDP averages the gradients; rank 0 logs, evaluates and writes).
    Rank 0 holds the run folder's lock from start to end."""
    folder = Path(cfg.output_dir)
    with owned_run(folder, device=cfg.train.device, what="pretraining run", command="csrl pretrain", log=log) as quiet:
        return _pretrain(cfg, data_dir=data_dir, resume=resume, callbacks=callbacks, log=quiet)


def _pretrain(
    cfg: PretrainConfig,
    *,
    data_dir: Path | None,
    resume: bool,
    callbacks: Sequence[StepCallback],
    log: Callable[[str], None],
) -> PretrainResult:
    t = cfg.train
    run, state = set_up_pretraining(cfg, data_dir=data_dir, resume=resume, callbacks=callbacks, log=log)
    log(describe(run))
    progress = progress_bar(run.total, state.step, enabled=t.progress and run.main)
    started, tokens, heldout = time.perf_counter(), 0, None
    while state.step < run.total:
        if state.position >= run.data.steps_per_epoch:  # end of an epoch
            state.epoch, state.position = state.epoch + 1, 0
            continue
        batch = run.masker(run.data.batch(state.epoch, state.position))
        lr = learning_rate(cfg, state.step, run.total)
        out, grad_norm = training_step(run, state, batch, lr)
        state.step, state.position = state.step + 1, state.position + 1
        tokens += batch.n_tokens * dist.world_size()

        if run.main and (state.step % t.log_every == 0 or state.step == run.total):
            rate = tokens / max(time.perf_counter() - started, 1e-9)
            log_step(run, state, out, lr=lr, grad_norm=grad_norm, tokens_per_s=rate)
        progress(state.step, float(out.loss.detach()))

        if t.eval_every and (state.step % t.eval_every == 0 or state.step == run.total):
            heldout = evaluate_heldout(run, state)
        if (t.checkpoint_every and state.step % t.checkpoint_every == 0) or state.step == run.total:
            save_checkpoint(run, state)
    progress(-1, 0.0)
    return finish(run, state, heldout)


# ----------------------------------------------------------------------------- the named steps
def describe(run: PretrainRun) -> str:
    cfg, d = run.cfg, run.data
    m = getattr(run.mlm, "config")
    size = f"{m.num_hidden_layers} layers x {m.hidden_size}, {sum(p.numel() for p in run.params) / 1e6:.1f}M parameters"
    source = (
        f"{cfg.model.init_from} (its own size and tokenizer)"
        if cfg.model.init_from
        else f"scratch ({cfg.model.tokenizer} vocabulary, {len(run.tokenizer)} tokens)"
    )
    return (
        f"pretraining a masked LM from {source}: {size}; {len(d.train)} training sequences "
        f"({d.n_lines} lines{', packed' if cfg.data.pack else ''}), {len(d.heldout)} held out; {run.total} steps "
        f"of {cfg.train.batch_size} x <= {cfg.data.max_length} tokens, {run.precision}, {run.device}"
    )


def learning_rate(cfg: PretrainConfig, step: int, total: int) -> float:
    """Linear warm-up to ``train.lr``, then linear decay to 0 at ``total`` (``linear``) or flat (``constant``)."""
    t = cfg.train
    if t.schedule == "constant":
        return t.lr * min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else t.lr
    return lr_at(step, peak=t.lr, total=total, warmup=t.warmup_steps)


def training_step(
    run: PretrainRun, state: RunState, batch: MaskedBatch, lr: float
) -> tuple[MaskedLMOutput, float | None]:
    """One optimizer step on a masked batch; returns the output and the gradient norm (before clipping;
    None without clipping). A non-finite loss or gradient applies no update and stops the run, naming the
    last good checkpoint."""
    t = run.cfg.train
    b = batch.to(run.device)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    with run.autocast():
        out: MaskedLMOutput = run.model(b.input_ids, b.attention_mask, b.labels)
    loss_finite = bool(torch.isfinite(out.loss))
    if loss_finite:
        (run.scaler.scale(out.loss) if run.scaler is not None else out.loss).backward()
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    norm = None
    if t.max_grad_norm is not None and loss_finite:
        norm = float(torch.nn.utils.clip_grad_norm_(run.params, t.max_grad_norm))
    grads_ok = loss_finite and (math.isfinite(norm) if norm is not None else grads_finite(run.params))
    if not grads_ok and not (run.scaler is not None and loss_finite):  # fp16 overflow: the scaler skips the step
        run.metrics.close()
        raise NonFiniteError(
            f"non-finite {'loss' if not loss_finite else 'gradient'} at step {state.step + 1} "
            f"(loss={float(out.loss.detach())}); no update was applied",
            hint=f"last good checkpoint: {ckpt.latest_checkpoint(run.checkpoints()) or 'none'} (resume with csrl "
            f"pretrain --resume {run.run_dir}); lower train.lr, add warm-up, or use train.precision=fp32",
        )
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    return out, norm


def log_step(
    run: PretrainRun, state: RunState, out: MaskedLMOutput, *, lr: float, grad_norm: float | None, tokens_per_s: float
) -> None:
    """MLM loss and accuracy of the batch, lr, speed, the geometry probe and the callbacks' values -> metrics."""
    correct = (out.logits.detach().argmax(-1) == out.targets).float().mean() if out.targets.numel() else None
    values = {
        "mlm/loss": float(out.loss.detach()),
        "train/lr": lr,
        "train/epoch": float(state.epoch),
        "train/tokens_per_s": tokens_per_s,
        "train/masked_tokens": float(out.targets.numel()),
    }
    if correct is not None:
        values["mlm/train_accuracy"] = float(correct)
    if grad_norm is not None:
        values["train/grad_norm"] = grad_norm
    if run.probe is not None and run.probe_encoder is not None and run.probe.due(state.step):
        values.update(run.probe.probe(run.probe_encoder, step=state.step))
        run.mlm.train()
    for cb in run.callbacks:
        values.update(cb(state.step, values) or {})
    run.metrics.log(state.step, values)


@torch.no_grad()
def evaluate_heldout(run: PretrainRun, state: RunState) -> dict[str, float] | None:
    """MLM loss and accuracy (argmax = original token) over the fixed masked held-out batches (rank 0)."""
    result = None
    if run.main and run.heldout:
        run.mlm.eval()
        local = getattr(run.model, "module", run.model)  # not through DDP: only rank 0 evaluates
        loss_sum, correct, n = 0.0, 0, 0
        for batch in run.heldout:
            b = batch.to(run.device)
            with run.autocast():
                out = local(b.input_ids, b.attention_mask, b.labels)
            k = out.targets.numel()
            loss_sum, n = loss_sum + float(out.loss) * k, n + k
            correct += int((out.logits.argmax(-1) == out.targets).sum())
        run.mlm.train()
        result = {"mlm/accuracy": correct / max(n, 1), "mlm/heldout_loss": loss_sum / max(n, 1)}
        run.metrics.log(state.step, {**result, "mlm/heldout_masked": float(n)})
        if not run.cfg.train.progress:
            run.log(f"step {state.step}: held-out MLM accuracy {result['mlm/accuracy']:.4f}, "
                    f"loss {result['mlm/heldout_loss']:.4f}")  # fmt: skip
    dist.barrier()
    return result


def save_checkpoint(run: PretrainRun, state: RunState) -> None:
    """A resumable checkpoint (rank 0 writes; every rank waits)."""
    ckpt.save_run_checkpoint(run.checkpoints(), state, model=run.mlm, optimizer=run.optimizer, scaler=run.scaler,
                             keep=run.cfg.train.keep_checkpoints, main=run.main)  # fmt: skip


def model_card(run: PretrainRun, state: RunState, heldout: dict[str, float] | None) -> str:
    score = (
        f"held-out MLM accuracy {heldout['mlm/accuracy']:.4f}, loss {heldout['mlm/heldout_loss']:.4f} "
        f"({run.cfg.data.heldout_sequences} sequences at most, fixed masks)"
        if heldout
        else "no held-out evaluation"
    )
    return "\n".join([
        "---", "library_name: transformers", "tags: [csrl, fill-mask, masked-lm]", "---", "",
        "# A masked-language model made by `csrl pretrain`", "",
        f"{state.step} steps; {score}.", "",
        "```python",
        "from transformers import AutoModelForMaskedLM, AutoModel",
        "mlm = AutoModelForMaskedLM.from_pretrained('PATH')  # the encoder and its MLM head",
        "encoder = AutoModel.from_pretrained('PATH')  # the encoder alone",
        "```", "",
        "As a csrl model: `csrl eval PATH --pooler mean`, `csrl analyze PATH --pooler mean`, "
        "`csrl train RECIPE --set model.model=PATH` (SimCSE's MLM auxiliary loss: `--set train.mlm_weight=0.1`).",
        "", "## Pretraining config", "", "```json", json.dumps(run.cfg.to_dict(), indent=2), "```", "",
    ])  # fmt: skip


def finish(run: PretrainRun, state: RunState, heldout: dict[str, float] | None) -> PretrainResult:
    """Save the model (rank 0) and close the log."""
    if heldout is None:  # a resumed run that had nothing left to do: its last evaluation
        scored = [r for r in run.metrics.records if "mlm/accuracy" in r]
        heldout = {k: scored[-1][k] for k in ("mlm/accuracy", "mlm/heldout_loss")} if scored else None
    model_dir = None
    if run.main:
        model_dir = save_mlm(run.mlm, run.tokenizer, run.run_dir / MODEL_DIR, card=model_card(run, state, heldout))
        run.log(f"model saved to {model_dir}")
    dist.barrier()
    run.metrics.close()
    return PretrainResult(run.run_dir, state.step, model_dir, heldout, run.metrics.records)
