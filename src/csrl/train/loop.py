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
from csrl.evaluate.embed_cache import encoder_encode_fn
from csrl.evaluate.sts import STSResults, evaluate_sts_suite, markdown_table, stsb_dev_score
from csrl.losses.paradigm import step_stats_tensors
from csrl.losses.registry import LossOutput
from csrl.models.encoder import Encoder, pooler_override
from csrl.models.save import save_encoder
from csrl.train import checkpoint as ckpt
from csrl.train import distributed as dist
from csrl.train.callbacks import Callback, StepInfo
from csrl.train.compile import mark_step
from csrl.train.config import RunConfig
from csrl.train.diffcse import diffcse_rtd_loss
from csrl.train.guard import CODE_NAMES, OK, HostGuard
from csrl.train.methods import view_rows
from csrl.train.mlm_aux import auxiliary_mlm_loss
from csrl.train.records import progress_bar
from csrl.train.run_lock import owned_run, run_folder
from csrl.train.schedule import lr_at
from csrl.train.setup import Run, set_up_run
from csrl.train.state import RunState
from csrl.train.step import Views, cached_embed_and_backward, embed_and_backward
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
    with owned_run(run_folder(cfg), device=cfg.train.device, what="run", command="csrl train", log=log) as quiet:
        return _train(cfg, data_dir=data_dir, resume=resume, overwrite=overwrite, callbacks=callbacks,
                      eval_before=eval_before, log=quiet, loss=loss)  # fmt: skip


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
    queued: list[PendingLog] = []  # logged steps whose values are still on the device (rank 0)
    last_logged = state.step  # every rank settles at the same steps
    while state.step < run.total:
        if state.position >= run.data.steps_in_epoch(state.epoch):  # end of an epoch
            next_epoch(run, state)
            continue
        records = run.data.records(state.epoch, state.position, step=state.step)
        lr = lr_at(state.step, peak=t.lr, total=run.total, warmup=t.warmup_steps)
        out, views = training_step(run, state, records, lr)
        state.step, state.position = state.step + 1, state.position + 1
        sentences += len(records) * dist.world_size()

        evaluated = bool(t.eval_every) and (state.step % t.eval_every == 0 or state.step == run.total)
        saved = (t.checkpoint_every and state.step % t.checkpoint_every == 0) or evaluated or state.step == run.total
        if state.step % t.log_every == 0 or state.step == run.total:
            # read the previous logged step's values now that this step's work is queued (no device stall)
            settle(run, state, queued, upto=last_logged, progress=progress)
            last_logged = state.step
            if run.main:
                rate = sentences / max(time.perf_counter() - started, 1e-9)
                queued.append(log_step(run, state, out, views, lr=lr, sentences_per_s=rate))
        if saved or run.guard.must_settle():  # evaluation, checkpoint, end, or a host guard's bad step
            settle(run, state, queued, upto=state.step, progress=progress)
        if evaluated:
            evaluate_dev(run, state)
        if saved:
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

    No host synchronisation: the non-finite guard (:mod:`csrl.train.guard`) decides on the device whether
    the update applies (a NaN/Inf loss or gradient applies none) and the host reads its decisions at the
    next settle point (:func:`settle`), which raises or counts skips by ``train.on_nonfinite``. The step
    back-propagates whatever the loss is; a non-finite one only ever reaches gradients that are dropped.
    """
    t = run.cfg.train
    features = run.data.features(records, run.encoder, run.cfg.data.max_length)
    gold = run.data.gold(records, run.device)  # scored pairs: {"scores": (B,)}, the loss's scores=; else {}
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    run.optimizer.zero_grad(set_to_none=True)  # set_to_none: CUDA-graph gradients must be freed each step
    mark_step(run.model)  # train.compile=reduce-overhead on CUDA: a new graph replay begins
    scale = run.scaler.scale if run.scaler is not None else (lambda x: x)
    if t.cache_chunk_size is not None:
        out, views = cached_embed_and_backward(
            run.model, features, run.data.n_views, run.loss_fn, t.cache_chunk_size, autocast=run.autocast, scale=scale,
            extra_views=lambda: gold,
        )  # fmt: skip
    else:
        mlm = partial(auxiliary_mlm_loss, run.encoder, features, weight=t.mlm_weight, autocast=run.autocast)
        extras = partial(run.method.extra_views, run.encoder, features, run.data.n_views, autocast=run.autocast)
        rtd = partial(diffcse_rtd_loss, run.encoder, view_rows(features, run.data.n_views), weight=t.diffcse_weight,
                      mask_ratio=t.diffcse_mask_ratio, autocast=run.autocast)  # fmt: skip
        out, views = embed_and_backward(
            run.model, features, run.data.n_views, run.loss_fn, autocast=run.autocast, scale=scale,
            extra_loss=mlm if t.mlm_weight else None, extra_views=lambda: {**extras(), **gold},
            views_loss=(lambda v: rtd(v.z1)) if t.diffcse_weight else None,  # DiffCSE: h = the first view's z
        )  # fmt: skip
        run.method.after_backward(run.encoder, features, run.data.n_views, autocast=run.autocast)  # ESimCSE's queue
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    run.guard.check(out.total, run.params, run.optimizer, state.step + 1)
    if isinstance(run.guard, HostGuard) and run.guard.last_code != OK:
        run.optimizer.zero_grad(set_to_none=True)  # no update; settle() counts it or stops the run
        return out, views
    if t.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(run.params, t.max_grad_norm)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()  # fused AdamW: skipped on the device when the guard found a non-finite value
    return out, views


@dataclass
class PendingLog:
    """A logged step whose values may still be device tensors; :meth:`read` turns them into floats at once."""

    step: int
    values: dict[str, float | torch.Tensor]

    def read(self) -> dict[str, float]:
        tensors = {k: v for k, v in self.values.items() if isinstance(v, torch.Tensor)}
        read = torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist() if tensors else []
        floats = dict(zip(tensors, read, strict=True))
        return {k: floats[k] if k in floats else float(v) for k, v in self.values.items()}


def settle(
    run: Run, state: RunState, queued: list[PendingLog], *, upto: int, progress: Callable[[int, float], None]
) -> None:
    """Read what the device holds for the steps numbered ``<= upto``: the guard's decisions, replayed into
    ``state`` in step order (``stop`` raises at the first non-finite step; ``skip`` counts it, logs
    ``train/nonfinite_skipped`` and raises at ``max_nonfinite_skips`` in a row), and the queued logged
    steps, written to the metrics in the same order. Every rank settles at the same steps."""
    decisions = run.guard.settle(upto).steps
    while queued and queued[0].step <= upto:
        entry = queued.pop(0)
        for step, code in [d for d in decisions if d[0] <= entry.step]:
            replay_guard(run, state, step, code)
        decisions = [d for d in decisions if d[0] > entry.step]
        values = entry.read()
        run.metrics.log(entry.step, values)
        progress(entry.step, values["train/loss"])
    for step, code in decisions:
        replay_guard(run, state, step, code)


def replay_guard(run: Run, state: RunState, step: int, code: int) -> None:
    """One guard decision on the host: a finite step ends a streak; a non-finite one stops the run
    (``on_nonfinite=stop``) or is counted (``skip``, at most ``max_nonfinite_skips`` in a row)."""
    if code == OK:
        state.consecutive_skips = 0
        return
    t, what = run.cfg.train, CODE_NAMES[code]
    if t.on_nonfinite == "stop":
        run.metrics.close()
        raise NonFiniteError(
            f"non-finite {what} at step {step}; no update was applied from that step on and no weights were written",
            hint=f"last good checkpoint: {ckpt.latest_checkpoint(run.checkpoints()) or 'none'}; resume it "
            f"skipping such steps (csrl train --resume {run.run_dir} --set train.on_nonfinite=skip), or start a "
            "new run with a lower train.lr, precision=fp32 or train.max_grad_norm (a resume refuses them)",
        )
    state.record_skip(step)
    if run.main:
        run.metrics.log(step, {"train/nonfinite_skipped": 1.0})
    if state.consecutive_skips < t.max_nonfinite_skips:
        return
    run.metrics.close()
    first = step - state.consecutive_skips + 1
    before = [p for p in ckpt.list_checkpoints(run.checkpoints()) if int(p.name[len(ckpt.PREFIX) :]) < first]
    raise NonFiniteError(
        f"{state.consecutive_skips} consecutive non-finite steps ({first}-{step}, the last with a non-finite "
        f"{what}) reached train.max_nonfinite_skips={t.max_nonfinite_skips}; {state.skip_summary()}",
        hint=f"last good checkpoint (before the streak): {before[-1] if before else 'none'}; start a new run with "
        "a lower train.lr, precision=fp32 or train.max_grad_norm (a resume refuses them), or resume with a higher "
        f"train.max_nonfinite_skips (csrl train --resume {run.run_dir} --set train.max_nonfinite_skips=N)",
    )


def log_step(
    run: Run, state: RunState, out: LossOutput, views: Views, *, lr: float, sentences_per_s: float
) -> PendingLog:
    """Loss, lr and loss terms, the gradient paradigm's statistics, and the callbacks' values, queued for the
    metrics: the device values stay on the device until :func:`settle` reads them all in one transfer."""
    t = run.cfg.train
    # compute_loss multiplies by the world size for DDP's gradient mean; log the global-batch loss itself
    values: dict[str, float | torch.Tensor] = {
        "train/loss": out.total.detach() / dist.world_size(), "train/lr": lr, "train/epoch": state.epoch
    }  # fmt: skip
    values.update({f"loss/{k}": v.detach() if isinstance(v, torch.Tensor) else v for k, v in out.terms.items()})
    hard = None if views.hard_neg is None else views.hard_neg.detach()
    info = StepInfo(state.step, Views(views.z1.detach(), views.z2.detach(), hard), out, run.loss_fn, run.encoder)
    if t.paradigm_every and state.step % t.paradigm_every == 0 and run.method.paradigm_applies:
        values.update(step_stats_tensors(run.loss_fn, info.views.z1, info.views.z2, info.views.hard_neg))
    for cb in run.callbacks:
        values.update(cb(info) or {})
    values["train/sentences_per_s"] = sentences_per_s
    return PendingLog(state.step, values)


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
                             keep=run.cfg.train.keep_checkpoints, main=run.main,
                             method_state=run.method.state_dict())  # fmt: skip


def evaluate_test_suite(run: Run, encoder: Encoder, name: str) -> STSResults:
    """The 7 STS test sets with ``train.final_eval_pooler``; written to ``results/<name>``."""
    t = run.cfg.train
    # the untrained model's table is cached (a sweep's cells share it); a trained model is new every run
    cached = name == "sts_before.json"
    with pooler_override(encoder, t.final_eval_pooler):
        encode = encoder_encode_fn(encoder, batch_size=t.eval_batch_size, cache=cached, log=run.log)
        res = evaluate_sts_suite(encode, run.data_dir)
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
    "PendingLog",
    "next_epoch",
    "replay_guard",
    "save_checkpoint",
    "settle",
    "train",
    "training_step",
]
