"""The training loop: a plain loop over named steps (no framework trainer).

``train(cfg)`` reads top to bottom in :func:`_train`: set up a run (:func:`~csrl.train.setup.set_up_run`),
optionally evaluate the untrained model, then for each step read a batch, take one training step
(``embed -> loss -> backward -> guard -> update``), log, evaluate on STS-B dev every ``eval_every``
steps keeping the best model (SimCSE's protocol), checkpoint, and finally evaluate the best model on
the 7 STS test sets. Everything a checkpoint restores is :class:`~csrl.train.state.RunState` plus the
weights, optimizer and RNG states.

Run directory layout::

    config.json          the resolved RunConfig
    metrics.jsonl        one JSON object per logged step (namespaced keys: train/, loss/, paradigm/, eval/)
    checkpoints/step-N/  resumable state (last ``keep_checkpoints``)
    best/                best model so far, sentence-transformers format
    results/             sts_before.json, sts_test.json, sts.md
    tensorboard/         when tensorboard is installed
    data_fingerprint.json  sha256 of the training files (a resume must train on the same content)
    resume_log.jsonl     one line per resume: when, from which checkpoint, which cadence keys changed
    .lock                held by the process training the run (csrl.train.run_lock)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from csrl.errors import CsrlError, NonFiniteError
from csrl.evaluate.sts import STSResults, evaluate_sts_suite, markdown_table, stsb_dev_score
from csrl.losses.paradigm import step_stats
from csrl.losses.registry import LossOutput
from csrl.models.encoder import Encoder, pooler_override
from csrl.models.save import save_encoder
from csrl.train import checkpoint as ckpt
from csrl.train import distributed as dist
from csrl.train.callbacks import Callback, StepInfo
from csrl.train.config import RunConfig
from csrl.train.mlm_aux import auxiliary_mlm_loss
from csrl.train.records import progress_bar
from csrl.train.run_lock import acquire_lock, run_folder, stopped_message
from csrl.train.schedule import lr_at
from csrl.train.setup import Run, set_up_run
from csrl.train.state import RunState
from csrl.train.step import Views, cached_embed_and_backward, embed_and_backward, grads_finite
from csrl.utils.io import atomic_write_text


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    best_dev: float | None
    best_step: int | None
    before: STSResults | None = None
    after: STSResults | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)


def train(
    cfg: RunConfig,
    *,
    data_dir: Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    eval_before: bool = False,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
    overwrite: bool = False,
    loss: nn.Module | None = None,
) -> RunResult:
    """Train ``cfg`` in this process, or as one rank of a ``torchrun`` job.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is created here (gloo on CPU, NCCL on
    CUDA) and torn down at the end. Each rank encodes ``batch_size / world_size`` rows; the losses see
    the gathered global batch (:func:`csrl.train.step.compute_loss`). Logging, evaluation, checkpoints and
    the final model are rank 0's; the other ranks wait at barriers and return a result with no scores.

    The run owns its folder (:mod:`csrl.train.run_lock`): rank 0 holds its lock from start to end, also
    when the run fails or is interrupted. A folder that holds another run is refused unless ``resume``
    (continue it; a change of its trajectory or data is refused) or ``overwrite`` (its records are moved
    aside).

    ``loss``: a loss object to train with instead of building ``cfg.loss`` (``cfg.loss`` must describe it;
    :func:`csrl.api.train` fills it in from the object).
    """
    owns_group = dist.init_from_env(cfg.train.device)
    lock = None
    try:
        quiet = log if dist.is_main_process() else (lambda msg: None)
        if dist.is_main_process():
            lock = acquire_lock(run_folder(cfg), log=quiet)
        return _train(cfg, data_dir=data_dir, resume=resume, overwrite=overwrite, callbacks=callbacks,
                      eval_before=eval_before, log=quiet, loss=loss)  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM through the CLI: say where the run stands
        if lock is not None:
            quiet(stopped_message(run_folder(cfg)))
        raise
    finally:
        if lock is not None:
            lock.release()
        if owns_group:
            dist.shutdown()


def _train(
    cfg: RunConfig,
    *,
    data_dir: Path | None,
    resume: bool,
    overwrite: bool,
    callbacks: Sequence[Callback],
    eval_before: bool,
    log: Callable[[str], None],
    loss: nn.Module | None = None,
) -> RunResult:
    t = cfg.train
    run, state = set_up_run(
        cfg, data_dir=data_dir, resume=resume, overwrite=overwrite, callbacks=callbacks, log=log, loss=loss
    )
    before = None
    if eval_before and run.main and run.resumed_from is None and t.final_eval:
        log("evaluating the untrained model on the 7 STS test sets ...")
        before = evaluate_test_suite(run, run.encoder, "sts_before.json")

    try:
        return _run_steps(run, state, before)
    finally:
        run.metrics.close()  # also when a step raises: the log file and trackers are closed (idempotent)


def _run_steps(run: Run, state: RunState, before: STSResults | None) -> RunResult:
    t = run.cfg.train
    progress = progress_bar(run.total, state.step, enabled=t.progress and run.main)
    run.encoder.train()
    started, sentences = time.perf_counter(), 0
    while state.step < run.total:
        if state.position >= run.data.steps_in_epoch(state.epoch):  # end of an epoch
            next_epoch(run, state)
            continue
        records = run.data.records(state.epoch, state.position, step=state.step)
        lr = lr_at(state.step, peak=t.lr, total=run.total, warmup=t.warmup_steps)
        out, views = training_step(run, state, records, lr)
        state.step, state.position = state.step + 1, state.position + 1
        sentences += len(records) * dist.world_size()

        if run.main and (state.step % t.log_every == 0 or state.step == run.total):
            rate = sentences / max(time.perf_counter() - started, 1e-9)
            log_step(run, state, out, views, lr=lr, sentences_per_s=rate)
        progress(state.step, float(out.total.detach()))

        evaluated = bool(t.eval_every) and (state.step % t.eval_every == 0 or state.step == run.total)
        if evaluated:
            evaluate_dev(run, state)
        if (t.checkpoint_every and state.step % t.checkpoint_every == 0) or evaluated or state.step == run.total:
            save_checkpoint(run, state)
    progress(-1, 0.0)
    return finish(run, state, before)


# ----------------------------------------------------------------------------- the named steps
def next_epoch(run: Run, state: RunState) -> None:
    """Move to the start of the next epoch; one without a single batch is an error (it would loop forever)."""
    state.epoch, state.position = state.epoch + 1, 0
    if run.data.steps_in_epoch(state.epoch) == 0:
        raise CsrlError(
            f"epoch {state.epoch} of the training data has no batch of {run.cfg.train.batch_size} "
            f"({run.data.n_records} records, step {state.step} of {run.total})",
            hint="use a smaller train.batch_size or more (distinct) training records, or data.no_duplicates=false",
        )


def training_step(run: Run, state: RunState, records: list[tuple[str, ...]], lr: float) -> tuple[LossOutput, Views]:
    """One optimizer step on ``records``: embed, loss, backward, non-finite guard, update.

    A non-finite loss or gradient applies no update: ``on_nonfinite=stop`` raises :class:`NonFiniteError`
    (naming the last good checkpoint), ``skip`` goes on (:func:`skip_nonfinite`).
    """
    t = run.cfg.train
    features = run.data.features(records, run.encoder, run.cfg.data.max_length)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)
    scale = run.scaler.scale if run.scaler is not None else (lambda x: x)
    if t.cache_chunk_size is not None:
        out, views = cached_embed_and_backward(
            run.model, features, run.data.n_views, run.loss_fn, t.cache_chunk_size, autocast=run.autocast, scale=scale
        )
    else:
        mlm = partial(auxiliary_mlm_loss, run.encoder, features, weight=t.mlm_weight, autocast=run.autocast)
        out, views = embed_and_backward(
            run.model, features, run.data.n_views, run.loss_fn, autocast=run.autocast, scale=scale,
            extra_loss=mlm if t.mlm_weight else None,
        )  # fmt: skip
    loss_finite = bool(torch.isfinite(out.total))
    # fp16: overflowing scaled gradients are the loss scaler's business (it skips the step and lowers the scale)
    if not (loss_finite and (run.scaler is not None or grads_finite(run.params))):
        if t.on_nonfinite == "stop":
            run.metrics.close()
            raise NonFiniteError(
                f"non-finite {'loss' if not loss_finite else 'gradient'} at step {state.step} "
                f"(loss={float(out.total.detach())}); no update was applied and no weights were written",
                hint=f"last good checkpoint: {ckpt.latest_checkpoint(run.checkpoints()) or 'none'}; resume it "
                f"skipping such steps (csrl train --resume {run.run_dir} --set train.on_nonfinite=skip), or start a "
                "new run with a lower train.lr, precision=fp32 or train.max_grad_norm (a resume refuses them)",
            )
        skip_nonfinite(run, state, loss_finite)
        return out, views
    state.consecutive_skips = 0
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    if t.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(run.params, t.max_grad_norm)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    return out, views


def skip_nonfinite(run: Run, state: RunState, loss_finite: bool) -> None:
    """``on_nonfinite=skip``: drop this step's gradients, count it in ``state`` and log
    ``train/nonfinite_skipped``; ``train.max_nonfinite_skips`` skipped steps in a row stop the run."""
    t = run.cfg.train
    run.optimizer.zero_grad(set_to_none=True)
    step = state.step + 1  # this step's number in metrics.jsonl and in checkpoint names
    state.record_skip(step)
    run.metrics.log(step, {"train/nonfinite_skipped": 1.0})
    if state.consecutive_skips < t.max_nonfinite_skips:
        return
    run.metrics.close()
    first = step - state.consecutive_skips + 1
    before = [p for p in ckpt.list_checkpoints(run.checkpoints()) if int(p.name[len(ckpt.PREFIX) :]) < first]
    raise NonFiniteError(
        f"{state.consecutive_skips} consecutive non-finite steps ({first}-{step}, the last with a non-finite "
        f"{'loss' if not loss_finite else 'gradient'}) reached train.max_nonfinite_skips={t.max_nonfinite_skips}; "
        f"{state.skip_summary()}",
        hint=f"last good checkpoint (before the streak): {before[-1] if before else 'none'}; start a new run with "
        "a lower train.lr, precision=fp32 or train.max_grad_norm (a resume refuses them), or resume with a higher "
        f"train.max_nonfinite_skips (csrl train --resume {run.run_dir} --set train.max_nonfinite_skips=N)",
    )


def log_step(run: Run, state: RunState, out: LossOutput, views: Views, *, lr: float, sentences_per_s: float) -> None:
    """Loss, lr and loss terms, the gradient paradigm's statistics, and the callbacks' values -> metrics."""
    t = run.cfg.train
    # compute_loss multiplies by the world size for DDP's gradient mean; log the global-batch loss itself
    values = {"train/loss": float(out.total.detach()) / dist.world_size(), "train/lr": lr, "train/epoch": state.epoch}
    values.update({f"loss/{k}": float(v) for k, v in out.terms.items()})
    hard = None if views.hard_neg is None else views.hard_neg.detach()
    info = StepInfo(state.step, Views(views.z1.detach(), views.z2.detach(), hard), out, run.loss_fn, run.encoder)
    if t.paradigm_every and state.step % t.paradigm_every == 0:
        values.update(step_stats(run.loss_fn, info.views.z1, info.views.z2, info.views.hard_neg))
    for cb in run.callbacks:
        values.update(cb(info) or {})
    values["train/sentences_per_s"] = sentences_per_s
    run.metrics.log(state.step, values)


def evaluate_dev(run: Run, state: RunState) -> None:
    """STS-B dev Spearman (rank 0); a new best is saved to ``best/`` (SimCSE's model selection)."""
    if run.main:
        batch = run.cfg.train.eval_batch_size
        score = stsb_dev_score(lambda s: run.encoder.encode(s, batch_size=batch), run.data_dir)
        run.metrics.log(state.step, {"eval/stsb_dev_spearman": score})
        best = "" if state.best_dev is None or score > state.best_dev else f" (best {state.best_dev:.2f})"
        run.log(f"step {state.step}: STS-B dev Spearman {score:.2f}{best}")
        if state.best_dev is None or score > state.best_dev:
            state.best_dev, state.best_step = score, state.step
            save_encoder(run.encoder, run.run_dir / "best", train_config=run.cfg.to_dict())
    dist.barrier()


def save_checkpoint(run: Run, state: RunState) -> None:
    """A resumable checkpoint of the run (rank 0 writes; every rank waits)."""
    ckpt.save_run_checkpoint(run.checkpoints(), state, model=run.encoder, optimizer=run.optimizer, scaler=run.scaler,
                             keep=run.cfg.train.keep_checkpoints, main=run.main)  # fmt: skip


def evaluate_test_suite(run: Run, encoder: Encoder, name: str) -> STSResults:
    """The 7 STS test sets with ``train.final_eval_pooler``; written to ``results/<name>``."""
    t = run.cfg.train
    with pooler_override(encoder, t.final_eval_pooler):
        res = evaluate_sts_suite(lambda s: encoder.encode(s, batch_size=t.eval_batch_size), run.data_dir)
    atomic_write_text(run.run_dir / "results" / name, res.to_json())
    return res


def finish(run: Run, state: RunState, before: STSResults | None) -> RunResult:
    """Save the final model when no dev selection ran, evaluate the best model, write the STS table."""
    t, best_dir = run.cfg.train, run.run_dir / "best"
    if run.main and (state.best_dev is None or not t.eval_every):
        save_encoder(run.encoder, best_dir, train_config=run.cfg.to_dict())
        state.best_step = state.step
    after = None
    if run.main and t.final_eval:
        run.log(f"evaluating the best model (step {state.best_step}) on the 7 STS test sets ...")
        best = Encoder.from_pretrained(model=str(best_dir)).to(run.device)
        after = evaluate_test_suite(run, best, "sts_test.json")
        rows = {"before training": before, "after training (best dev)": after} if before else {"after": after}
        table = markdown_table({k: v for k, v in rows.items() if v is not None})
        atomic_write_text(run.run_dir / "results" / "sts.md", table + "\n")
        save_encoder(best, best_dir, train_config=run.cfg.to_dict(), results_md=table)
    if state.nonfinite_skips:
        run.log(state.skip_summary())
    run.metrics.close()
    return RunResult(run.run_dir, state.step, state.best_dev, state.best_step, before, after, run.metrics.records)


__all__ = [
    "RunResult",
    "StepInfo",
    "evaluate_dev",
    "finish",
    "log_step",
    "next_epoch",
    "save_checkpoint",
    "skip_nonfinite",
    "train",
    "training_step",
]
