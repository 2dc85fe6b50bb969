"""The training loop: a plain loop over small functions (no framework trainer).

``train(cfg)`` reads top to bottom: set up (seeds, run directory, encoder, loss, corpus, sampler,
optimizer), optionally resume, then for each step ``embed -> loss -> backward -> guard -> update``,
with callbacks that see the embeddings and loss terms, evaluation on STS-B dev every ``eval_every``
steps keeping the best model (SimCSE's protocol), resumable checkpoints, and a final STS table.

Run directory layout::

    config.json          the resolved RunConfig
    metrics.jsonl        one JSON object per logged step (namespaced keys: train/, loss/, paradigm/, eval/)
    checkpoints/step-N/  resumable state (last ``keep_checkpoints``)
    best/                best model so far, sentence-transformers format
    results/             sts_before.json, sts_test.json, sts.md
    tensorboard/         when tensorboard is installed
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from csrl.data.corpora import Corpus, open_corpus
from csrl.data.sampler import EpochSampler, NoDuplicatesSampler, find_duplicates_in_batch, record_keys
from csrl.data.sts import default_data_dir, load_sts_suite, load_sts_task
from csrl.errors import CsrlError, NonFiniteError
from csrl.evaluate.sts import STSResults, evaluate_sts
from csrl.losses.registry import LossOutput, build_loss
from csrl.models.encoder import Encoder
from csrl.models.save import save_encoder
from csrl.train import checkpoint as ckpt
from csrl.train import distributed as dist
from csrl.train.config import RunConfig
from csrl.train.geometry_probe import make_dynamics_callback
from csrl.train.schedule import lr_at
from csrl.train.step import Views, cached_embed_and_backward, compute_loss, split_views
from csrl.utils.io import atomic_write_json, atomic_write_text

IN_BATCH_NEGATIVE_LOSSES = (
    "infonce", "arccon", "mpt", "met", "mat", "surrogate", "mhe", "mhs", "barlowtwins", "vicreg",
)  # fmt: skip


@dataclass
class StepInfo:
    """What a callback sees after each backward: embeddings (detached), loss terms, and their gradients."""

    step: int
    views: Views
    loss: LossOutput
    loss_fn: nn.Module
    encoder: Encoder


class Callback(Protocol):
    def __call__(self, info: StepInfo) -> dict[str, float] | None: ...


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    best_dev: float | None
    best_step: int | None
    before: STSResults | None = None
    after: STSResults | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers
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


def autocast_factory(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "fp16" and device.type != "cuda":
        raise CsrlError("train.precision=fp16 needs a CUDA device", hint="on CPU use precision=bf16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def resolve_train_files(cfg: RunConfig, data_dir: Path | None) -> list[Path]:
    root = data_dir if data_dir is not None else default_data_dir()
    out = []
    for f in cfg.data.train_files:
        p = Path(f).expanduser()
        if not p.is_absolute() and not p.exists():
            p = root / p
        if not p.exists():
            raise CsrlError(
                f"training file {f} not found (looked in the current folder and in {root})",
                hint="set CSRL_DATA_DIR (or --data-dir) to the data folder, or give data.train_files as paths",
            )
        out.append(p)
    return out


class MetricsLog:
    """Append-only JSONL log (+ TensorBoard when installed); on resume, steps after the checkpoint are dropped."""

    def __init__(self, path: Path, *, resume_step: int | None, tensorboard: bool, write: bool = True) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._fh: Any = None
        self._tb: Any = None
        if not write:  # a non-main rank: keep records in memory, never touch rank 0's file
            return
        if resume_step is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if rec.get("step", 0) <= resume_step:
                    self.records.append(rec)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        elif path.exists():
            path.unlink()
        self._fh = path.open("a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # tensorboard not installed
                self._tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        rec = {"step": step, **{k: float(v) for k, v in values.items()}}
        self.records.append(rec)
        if self._fh is None:
            return
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in values.items():
                if math.isfinite(float(v)):
                    self._tb.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
        if self._tb is not None:
            self._tb.close()


def grads_finite(params: Sequence[Tensor]) -> bool:
    """True iff every gradient entry is finite: the largest |g| (NaN propagates through the max) is finite.

    One read of each gradient and no boolean masks: about half the time of ``isfinite(g).all()`` per
    tensor (~36 ms against ~63 ms per step for MiniLM on 2 CPU cores)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=math.inf, foreach=None)))


def evaluate_dev(encoder: Encoder, data_dir: Path | None, batch_size: int) -> float:
    task = load_sts_task("STSBenchmark", data_dir, split="dev")
    res = evaluate_sts(lambda s: encoder.encode(s, batch_size=batch_size), [task])
    return res.tasks[0].score("all")


def evaluate_suite(encoder: Encoder, data_dir: Path | None, batch_size: int, pooler: str | None) -> STSResults:
    tasks = load_sts_suite(data_dir)
    with pooler_override(encoder, pooler):
        return evaluate_sts(lambda s: encoder.encode(s, batch_size=batch_size), tasks)


@contextlib.contextmanager
def pooler_override(encoder: Encoder, pooler: str | None) -> Iterator[None]:
    """Evaluate with another pooler (e.g. ``cls_before_pooler`` for a ``cls`` model) without changing it."""
    from csrl.models.pooling import canonical_pooler

    old = encoder.pooler
    if pooler is not None:
        encoder.pooler = canonical_pooler(pooler)
    try:
        yield
    finally:
        encoder.pooler = old


def check_batch_semantics(cfg: RunConfig, corpus: Corpus) -> None:
    name = cfg.loss.name.split("-")[0]
    if cfg.train.grad_accum_steps > 1 and name in IN_BATCH_NEGATIVE_LOSSES:
        raise CsrlError(
            f"train.grad_accum_steps={cfg.train.grad_accum_steps} with loss {cfg.loss.name!r}: gradient "
            "accumulation silently shrinks the in-batch negatives to one micro-batch",
            hint="use train.cache_chunk_size=N (cached large batches: exact full-batch negatives, small memory)",
        )
    if cfg.train.batch_size < 2 and name in IN_BATCH_NEGATIVE_LOSSES:
        raise CsrlError(
            f"train.batch_size=1 with loss {cfg.loss.name!r}: an in-batch-negative loss needs at least 2 sentences",
            hint="use train.batch_size >= 2 (SimCSE: 64)",
        )
    if len(corpus.fields) not in (1, 2, 3):
        raise CsrlError(
            f"the corpus yields {len(corpus.fields)} fields {corpus.fields}; expected 1 (sentence), "
            "2 (anchor, positive) or 3 (anchor, positive, hard negative)",
            hint="choose columns with data.columns=[sent0,sent1,hard_neg]",
        )


# ----------------------------------------------------------------------------- the loop
def train(
    cfg: RunConfig,
    *,
    data_dir: Path | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    eval_before: bool = False,
    log: Callable[[str], None] = lambda msg: print(msg, flush=True),
) -> RunResult:
    """Train ``cfg`` in this process, or as one rank of a ``torchrun`` job.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is created here (gloo on CPU, NCCL on
    CUDA) and torn down at the end. Each rank encodes ``batch_size / world_size`` rows; the losses see
    the gathered global batch (:func:`csrl.train.step.compute_loss`). Logging, evaluation, checkpoints and
    the final model are rank 0's; the other ranks wait at barriers and return a result with no scores.
    """
    owns_group = dist.init_from_env(cfg.train.device)
    try:
        return _train(
            cfg,
            data_dir=data_dir,
            resume=resume,
            callbacks=callbacks,
            eval_before=eval_before,
            log=log if dist.is_main_process() else (lambda msg: None),
        )
    finally:
        if owns_group:
            dist.shutdown()


def _train(
    cfg: RunConfig,
    *,
    data_dir: Path | None,
    resume: bool,
    callbacks: Sequence[Callback],
    eval_before: bool,
    log: Callable[[str], None],
) -> RunResult:
    t = cfg.train
    run_dir = Path(cfg.output_dir)
    main = dist.is_main_process()
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    device = pick_device(t.device)
    autocast = autocast_factory(device, t.precision)

    # -- run directory and resume point
    resume_from = ckpt.latest_checkpoint(run_dir / "checkpoints") if resume else None
    if resume and resume_from is None:
        if not (run_dir / "config.json").exists():
            raise CsrlError(f"cannot resume: {run_dir} holds no run", hint="start it with csrl train CONFIG")
        log(f"no checkpoint in {run_dir} yet: starting from the beginning")

    # -- everything that is built from the seed
    # (input first: bad data or settings fail before the model is loaded or anything is written)
    corpus = open_corpus(resolve_train_files(cfg, data_dir), fmt=cfg.data.format, columns=cfg.data.columns)  # type: ignore[arg-type]
    n_records = min(len(corpus), cfg.data.max_sentences or len(corpus))
    check_batch_semantics(cfg, corpus)
    ws = dist.world_size()
    if t.batch_size % ws:
        raise CsrlError(f"train.batch_size={t.batch_size} is not divisible by the {ws} processes")
    local_bs = t.batch_size // ws
    sampler: EpochSampler
    grouping: dict[str, Any] = {}
    if cfg.data.group_by_length > 1:
        grouping = {"lengths": corpus.record_bytes()[:n_records], "group_batches": cfg.data.group_by_length}
    if cfg.data.no_duplicates:
        keys = record_keys(_Prefix(corpus, n_records))
        sampler = NoDuplicatesSampler(keys, local_bs, t.seed, rank=dist.rank(), world_size=ws, **grouping)
    else:
        sampler = EpochSampler(n_records, local_bs, t.seed, rank=dist.rank(), world_size=ws, **grouping)
    loss_fn = build_loss(cfg.loss.name, **dict(cfg.loss.params)).to(device)
    seed_everything(t.seed)
    encoder = Encoder.from_pretrained(cfg.model).to(device)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "config.json", cfg.to_dict())
    n_views = 1 if len(corpus.fields) == 1 else len(corpus.fields)
    steps_per_epoch = sampler.steps_per_epoch
    total = t.max_steps if t.max_steps is not None else steps_per_epoch * t.epochs
    total = min(total, steps_per_epoch * t.epochs)

    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" else None
    model: nn.Module = encoder
    if dist.is_dist():
        model = nn.parallel.DistributedDataParallel(
            encoder, device_ids=[device.index] if device.type == "cuda" else None
        )
    if t.compile:
        encoder.backbone = torch.compile(encoder.backbone)  # type: ignore[assignment]

    step, best_dev, best_step = 0, None, None
    epoch, position = 0, 0
    before = None
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, encoder, optimizer)
        tr = state["trainer"]
        step, best_dev, best_step = tr["step"], tr.get("best_dev"), tr.get("best_step")
        epoch, position = tr["epoch"], tr["position"]
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        log(f"resumed from {resume_from} (step {step})")
    metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=step if resume else None, tensorboard=main, write=main)
    dyn = make_dynamics_callback(cfg, encoder, data_dir) if main else None
    if dyn is not None:
        callbacks = [*callbacks, dyn]
        if resume_from is None:
            metrics.log(0, dyn.initial(encoder))

    log(
        f"training {cfg.model.model} ({encoder.pooler}, head {encoder.head.kind}) with {cfg.loss.name} on "
        f"{n_records} records x {len(corpus.fields)} field(s): {total} steps of {t.batch_size}, {t.precision}, {device}"
    )
    if eval_before and main and resume_from is None and t.final_eval:
        log("evaluating the untrained model on the 7 STS test sets ...")
        before = evaluate_suite(encoder, data_dir, t.eval_batch_size, t.final_eval_pooler)
        atomic_write_text(run_dir / "results" / "sts_before.json", before.to_json())

    def save_state() -> None:
        if main:
            ckpt.save_checkpoint(
                run_dir / "checkpoints",
                step,
                model=encoder,
                optimizer=optimizer,
                scaler_state=scaler.state_dict() if scaler is not None else None,
                trainer_state={
                    "epoch": epoch,
                    "position": position,
                    "best_dev": best_dev,
                    "best_step": best_step,
                },
                keep=t.keep_checkpoints,
            )
        dist.barrier()

    def maybe_evaluate() -> None:
        nonlocal best_dev, best_step
        if main:
            score = evaluate_dev(encoder, data_dir, t.eval_batch_size)
            metrics.log(step, {"eval/stsb_dev_spearman": score})
            if not t.progress:
                log(f"step {step}: STS-B dev Spearman {score:.2f}")
            if best_dev is None or score > best_dev:
                best_dev, best_step = score, step
                save_encoder(encoder, run_dir / "best", train_config=cfg.to_dict())
        dist.barrier()

    warned_dups = False
    progress = _progress(total, step, enabled=t.progress and main)
    encoder.train()
    t_start = time.perf_counter()
    sentences_done = 0
    while step < total:
        if position >= _steps_in_epoch(sampler, epoch):
            epoch, position = epoch + 1, 0
            continue
        idx = sampler.batch(epoch, position)
        records = corpus.get_many(idx)
        texts = [r[0] for r in records]
        if n_views == 1 and not warned_dups and find_duplicates_in_batch(texts):
            warned_dups = True
            warnings.warn(
                f"step {step}: the batch holds duplicate sentences; each duplicate is a false negative "
                "for in-batch-negative losses (set data.no_duplicates=true to keep them apart)",
                stacklevel=1,
            )
        if n_views == 1:
            flat = texts + texts  # two dropout views of each sentence, one forward
        else:
            flat = [r[v] for v in range(n_views) for r in records]
        features = encoder.tokenize(flat, max_length=cfg.data.max_length)
        features = {k: v.to(device) for k, v in features.items()}
        lr = lr_at(step, peak=t.lr, total=total, warmup=t.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)

        if t.cache_chunk_size is not None:
            out, views = cached_embed_and_backward(
                model,
                features,
                max(n_views, 2),
                loss_fn,
                t.cache_chunk_size,
                autocast=autocast,
                scale=(scaler.scale if scaler is not None else (lambda x: x)),
            )
        else:
            with autocast():
                z = model(features)
            views = split_views(z.float(), max(n_views, 2))
            out = compute_loss(loss_fn, views)
            if torch.isfinite(out.total):
                (scaler.scale(out.total) if scaler is not None else out.total).backward()
        finite = bool(torch.isfinite(out.total)) and grads_finite(params)
        if not finite:
            last = ckpt.latest_checkpoint(run_dir / "checkpoints")
            if t.on_nonfinite == "stop":
                metrics.close()
                raise NonFiniteError(
                    f"non-finite {'loss' if not torch.isfinite(out.total) else 'gradient'} at step {step} "
                    f"(loss={float(out.total.detach())}); no update was applied and no weights were written",
                    hint=f"last good checkpoint: {last or 'none'} (resume with csrl train --resume {run_dir}); "
                    "lower train.lr, use precision=fp32, or set train.on_nonfinite=skip",
                )
            optimizer.zero_grad(set_to_none=True)
            metrics.log(step, {"train/nonfinite_skipped": 1.0})
        else:
            if scaler is not None:
                scaler.unscale_(optimizer)
            if t.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
        step += 1
        position += 1
        sentences_done += len(texts) * ws

        values: dict[str, float] = {}
        if main and (step % t.log_every == 0 or step == total):
            # compute_loss multiplies by the world size for DDP's gradient mean; log the global-batch loss itself
            values = {"train/loss": float(out.total.detach()) / ws, "train/lr": lr, "train/epoch": epoch}
            values.update({f"loss/{k}": float(v) for k, v in out.terms.items()})
            info = StepInfo(
                step,
                Views(
                    views.z1.detach(),
                    views.z2.detach(),
                    None if views.hard_neg is None else views.hard_neg.detach(),
                ),
                out,
                loss_fn,
                encoder,
            )
            if t.paradigm_every and step % t.paradigm_every == 0:
                values.update(_paradigm_stats(loss_fn, info.views))
            for cb in callbacks:
                extra = cb(info)
                if extra:
                    values.update(extra)
            values["train/sentences_per_s"] = sentences_done / max(time.perf_counter() - t_start, 1e-9)
            metrics.log(step, values)
        progress(step, float(out.total.detach()))

        evaluated = False
        if t.eval_every and (step % t.eval_every == 0 or step == total):
            maybe_evaluate()
            evaluated = True
        if (t.checkpoint_every and step % t.checkpoint_every == 0) or evaluated or step == total:
            save_state()
    progress(-1, 0.0)

    if main and (best_dev is None or not t.eval_every):
        save_encoder(encoder, run_dir / "best", train_config=cfg.to_dict())
        best_step = step
    after = None
    if main and t.final_eval:
        log(f"evaluating the best model (step {best_step}) on the 7 STS test sets ...")
        best = Encoder.from_pretrained(model=str(run_dir / "best")).to(device)
        after = evaluate_suite(best, data_dir, t.eval_batch_size, t.final_eval_pooler)
        atomic_write_text(run_dir / "results" / "sts_test.json", after.to_json())
        from csrl.evaluate.sts import markdown_table

        rows = {"before training": before, "after training (best dev)": after} if before else {"after": after}
        table = markdown_table({k: v for k, v in rows.items() if v is not None})
        atomic_write_text(run_dir / "results" / "sts.md", table + "\n")
        save_encoder(best, run_dir / "best", train_config=cfg.to_dict(), results_md=table)
    metrics.close()
    return RunResult(run_dir, step, best_dev, best_step, before, after, metrics.records)


def _steps_in_epoch(sampler: EpochSampler, epoch: int) -> int:
    if isinstance(sampler, NoDuplicatesSampler):
        return sampler.steps_in_epoch(epoch)
    return sampler.steps_per_epoch


class _Prefix:
    """The first ``n`` records of a corpus (for ``data.max_sentences``)."""

    def __init__(self, corpus: Corpus, n: int) -> None:
        self.corpus, self.n = corpus, n

    def __len__(self) -> int:
        return self.n

    def get(self, i: int) -> tuple[str, ...]:
        return self.corpus.get(i)


def _paradigm_stats(loss_fn: nn.Module, views: Views) -> dict[str, float]:
    from csrl.losses.paradigm import step_stats

    return step_stats(loss_fn, views.z1, views.z2, views.hard_neg)


def _progress(total: int, start: int, *, enabled: bool) -> Callable[[int, float], None]:
    if not enabled:
        return lambda step, loss: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def update(step: int, loss: float) -> None:
        if step < 0:
            bar.close()
            return
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}")

    return update
