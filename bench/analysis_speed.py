"""csrl's geometry analysis suite: time split into forward (token states) and metrics.

What ``csrl analyze`` does (``csrl.pipelines.analyze.analyze_model``, without writing files), timed in
parts: ``Encoder.token_states`` over STS-B test sentence1 (1,379 sentences, every layer, padding
dropped), the positive pairs (STS-B test pairs with gold > 4, encoded for the alignment metric), then
``analyze_token_states`` (every registered metric: anisotropy baseline, self-similarity, intra-sentence
similarity, norms, rogue dimensions on every layer, and the sentence-level metrics). Model loading is not
timed. The whole thing runs in its own interpreter for a clean peak RSS; repeats are medians.

Run: CSRL_DATA_DIR=../shared/data .venv/bin/python bench/analysis_speed.py [--repeats 3] [--markdown out.md]
"""

from __future__ import annotations

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


def run_suite(root: Path, model: str, batch_size: int, limit: int | None) -> dict[str, Any]:
    from csrl.pipelines.analyze import analyze_model

    result = analyze_model(model, data_dir=root, limit=limit, batch_size=batch_size)
    x = result.extra
    return {
        "forward_s": x["seconds_forward"],
        "pairs_s": x["seconds_positive_pairs"],
        "metrics_s": x["seconds_metrics"],
        "total_s": x["seconds_forward"] + x["seconds_positive_pairs"] + x["seconds_metrics"],
        "sentences": result.n_sentences,
        "tokens": result.n_tokens,
        "layers": result.n_layers,
        "pooler": x["pooler"],
    }


def main() -> None:
    p = child_parser(__doc__)
    p.add_argument("--data-dir", default=None, help="data folder (default: $CSRL_DATA_DIR)")
    p.add_argument("--model", default="embedded:all-MiniLM-L6-v2")
    p.add_argument("--batch-size", type=int, default=64, help="token_states batch (csrl analyze's default)")
    p.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    if args.child:
        set_threads(args.threads)
        finish_child(args.result, run_suite(data_dir(args.data_dir), args.model, args.batch_size, args.limit))
        return

    data_dir(args.data_dir)
    forward = ["--threads", str(args.threads), "--model", args.model, "--batch-size", str(args.batch_size)]
    if args.data_dir:
        forward += ["--data-dir", args.data_dir]
    if args.limit:
        forward += ["--limit", str(args.limit)]
    print(f"machine: {machine_description(args.threads)}", flush=True)
    results = run_round_robin(Path(__file__), ["csrl-analyze"], forward, args.repeats)
    runs = results["csrl-analyze"]
    ok = [r for r in runs if "error" not in r]
    row: dict[str, Any] = {k: median_of(runs, k) for k in ("forward_s", "pairs_s", "metrics_s", "total_s")}
    row["peak_rss_gb"] = (median_of(runs, "peak_rss_mb") or 0) / 1024 or None
    if row["total_s"]:
        row["forward_share"] = 100 * row["forward_s"] / row["total_s"]
        row["metrics_share"] = 100 * row["metrics_s"] / row["total_s"]
    info = ok[0] if ok else {}
    row["what"] = (
        f"{info.get('sentences')} sentences, {info.get('tokens')} tokens, {info.get('layers')} layers, "
        f"pooler {info.get('pooler')}"
        if ok
        else runs[0].get("error", "")[:160]
    )
    cols = [
        ("what", "input", ""), ("forward_s", "forward s", ".1f"), ("pairs_s", "positive pairs s", ".1f"),
        ("metrics_s", "metrics s", ".1f"), ("total_s", "total s", ".1f"), ("forward_share", "forward %", ".0f"),
        ("metrics_share", "metrics %", ".0f"), ("peak_rss_gb", "peak RSS GB", ".2f"),
    ]  # fmt: skip
    for md in (False, True):
        title = f"Analysis suite ({args.model}), median of {args.repeats}"
        emit(
            (f"### {title}\n" if md else f"{title}\n") + table([row], cols, markdown=md), args.markdown if md else None
        )
        print()


if __name__ == "__main__":
    main()
