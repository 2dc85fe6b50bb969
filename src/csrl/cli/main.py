"""``csrl`` command line: train, eval, encode, analyze, paradigm, data.

Only this module reads argv and the environment (``CSRL_DATA_DIR``). User mistakes raise
:class:`~csrl.errors.CsrlError`, which ``main`` prints as a clear message and turns into exit code 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csrl.data.sts import POSITIVE_THRESHOLD
from csrl.errors import CsrlError

EPILOG = "Docs: README.md. Data: set CSRL_DATA_DIR or pass --data-dir (csrl data fetch downloads the sets)."


def _data_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir).expanduser()
    from csrl.data.sts import default_data_dir

    return default_data_dir()


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", help="data folder in the SentEval layout (default: $CSRL_DATA_DIR or ~/.cache/csrl/data)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")


# --------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from csrl.train.config import build_config, load_config, read_yaml

    overrides = list(args.set or [])
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.resume:
        run = Path(args.resume)
        if not (run / "config.json").exists():
            raise CsrlError(f"cannot resume: {run}/config.json not found", hint="pass the run folder of a started run")
        from csrl.train.config import apply_overrides

        raw = json.loads((run / "config.json").read_text())
        cfg = build_config(apply_overrides(raw, overrides + [f"output_dir={run}"]))
    else:
        if args.config is None:
            raise CsrlError(
                "csrl train needs a CONFIG file (or --resume RUN_DIR)",
                hint="e.g. csrl train configs/quickstart-cpu.yaml",
            )
        cfg = load_config(Path(args.config), overrides)
    if args.dry_run:
        from csrl.losses.registry import build_loss

        build_loss(cfg.loss.name, **dict(cfg.loss.params))
        print(cfg.to_json())
        print("dry run: the config resolves and validates; nothing was downloaded or trained", file=sys.stderr)
        return 0
    del read_yaml
    _threads(args.threads or cfg.train.num_threads)
    from csrl.evaluate.sts import markdown_table
    from csrl.train.loop import train

    t0 = time.perf_counter()
    res = train(cfg, data_dir=_data_dir(args), resume=bool(args.resume), eval_before=not args.no_before)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return 0
    print(
        f"\nrun: {res.run_dir}  steps: {res.steps}  best STS-B dev: "
        f"{res.best_dev if res.best_dev is None else round(res.best_dev, 2)} (step {res.best_step})  "
        f"time: {time.perf_counter() - t0:.0f}s"
    )
    rows = {k: v for k, v in (("before training", res.before), ("after training", res.after)) if v is not None}
    if rows:
        print(markdown_table(rows))
    return 0


# --------------------------------------------------------------------------- eval / encode
def _load_encoder(model: str, pooler: str | None, device: str | None = None):  # type: ignore[no-untyped-def]
    from csrl.models.encoder import Encoder

    overrides: dict[str, Any] = {"pooler": pooler} if pooler else {}
    enc = Encoder.from_pretrained(model=model, **overrides)
    if device:
        enc = enc.to(device)
    return enc


def _autocast_dtype(precision: str, device_type: str) -> Any:
    """Inference autocast dtype for ``--precision`` (fp32: none)."""
    import torch

    if precision == "fp32":
        return None
    if precision == "fp16" and device_type != "cuda":
        raise CsrlError("--precision fp16 needs a CUDA device", hint="use --precision bf16 on CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def cmd_eval(args: argparse.Namespace) -> int:
    from csrl.data.sts import load_sts_suite
    from csrl.evaluate.sts import evaluate_sts, markdown_table

    _threads(args.threads)
    tasks = {t.strip() for t in args.tasks.split(",") if t.strip()}
    unknown = tasks - {"sts", "transfer"}
    if unknown:
        raise CsrlError(
            f"unknown task group(s) {', '.join(sorted(unknown))}", hint="use --tasks sts, transfer or sts,transfer"
        )
    data_dir = _data_dir(args)
    out: dict[str, object] = {}
    enc = _load_encoder(args.model, args.pooler, args.device)
    autocast = _autocast_dtype(args.precision, enc.device.type)
    encode = lambda s: enc.encode(s, batch_size=args.batch_size, autocast_dtype=autocast)  # noqa: E731
    label = f"{Path(args.model).name or args.model} ({enc.pooler})"
    if "sts" in tasks:
        suite = load_sts_suite(data_dir)
        res = evaluate_sts(encode, suite, aggregate=args.aggregate)
        print(markdown_table({label: res}, aggregate=args.aggregate))
        print(
            f"\n{res.n_unique_sentences} unique sentences encoded in {res.seconds_encode:.1f}s "
            f"(total {res.seconds_total:.1f}s); STS12-16 aggregate: {args.aggregate}; precision: {args.precision}"
        )
        out["sts"] = json.loads(res.to_json())
    if "transfer" in tasks:
        from csrl.evaluate.transfer import evaluate_transfer

        # one call: the encoder sorts all distinct sentences by token count and batches them itself
        tr = evaluate_transfer(
            encode, data_dir, protocol=args.protocol, batch_size=None, pair_features=args.mrpc_features
        )
        print(tr.to_markdown())
        out["transfer"] = json.loads(tr.to_json())
    if args.output:
        from csrl.utils.io import atomic_write_json

        atomic_write_json(Path(args.output), out)
        print(f"results written to {args.output}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from csrl.utils.io import atomic_write_bytes

    _threads(args.threads)
    src = Path(args.input)
    if not src.is_file():
        raise CsrlError(f"input file {src} not found", hint="pass a text file with one sentence per line")
    try:
        sentences = [s for s in src.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise CsrlError(f"{src}: not UTF-8 at byte {exc.start}", hint="re-encode it, e.g. iconv -t utf-8") from None
    for k, s in enumerate(sentences, start=1):
        if not s.strip():
            raise CsrlError(f"{src}:{k}: empty line", hint="remove blank lines: every line must hold one sentence")
    enc = _load_encoder(args.model, args.pooler, args.device)
    emb = enc.encode(
        sentences,
        batch_size=args.batch_size,
        normalize=args.normalize,
        autocast_dtype=_autocast_dtype(args.precision, enc.device.type),
    )
    import io

    buf = io.BytesIO()
    np.save(buf, emb)
    atomic_write_bytes(Path(args.output), buf.getvalue())
    print(f"{emb.shape[0]} embeddings of dimension {emb.shape[1]} written to {args.output}")
    return 0


# --------------------------------------------------------------------------- analysis
def cmd_analyze(args: argparse.Namespace) -> int:
    from csrl.analysis.plots import save_all_plots
    from csrl.analysis.suite import analyze_token_states, encode_pairs
    from csrl.data.sts import load_analysis_sentences, load_positive_pairs
    from csrl.utils.io import atomic_write_text

    _threads(args.threads)
    data_dir = _data_dir(args)
    if args.sentences:
        src = Path(args.sentences)
        if not src.is_file():
            raise CsrlError(f"sentence file {src} not found", hint="one sentence per line, UTF-8")
        sentences = [s for s in src.read_text(encoding="utf-8").splitlines() if s.strip()]
        source = str(src)
    else:
        sentences = load_analysis_sentences(data_dir)
        source = "STS-B test sentence1 (sts/stsb/raw/sts-test.csv, cased)"
    if args.limit:
        sentences = sentences[: args.limit]
    if len(sentences) < 2:
        raise CsrlError(f"need at least 2 sentences to analyze, got {len(sentences)}")
    enc = _load_encoder(args.model, args.pooler)
    t0 = time.perf_counter()
    states = enc.token_states(sentences, batch_size=args.batch_size)
    t1 = time.perf_counter()
    pairs = None
    try:
        pairs = encode_pairs(enc, *load_positive_pairs(data_dir, args.positive_threshold))
    except CsrlError:
        pass  # no STS-B: alignment is skipped
    t2 = time.perf_counter()
    tok = enc.tokenizer
    result = analyze_token_states(
        states,
        vocab=tok.convert_ids_to_tokens,
        special_tokens=set(tok.all_special_tokens),
        seed=args.seed,
        positive_pairs=pairs,
    )
    t3 = time.perf_counter()
    result.extra.update(
        {
            "model": args.model,
            "pooler": enc.pooler,
            "sentences": source,
            "seconds_forward": t1 - t0,
            "seconds_positive_pairs": t2 - t1,
            "seconds_metrics": t3 - t2,
        }
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "analysis.json", result.to_json(indent=2))
    figures = save_all_plots(result, out)
    print(
        "| layer | anisotropy | self-sim | adj. self-sim | intra-sim | adj. intra-sim | norm | funct. ss | content ss |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i in range(result.n_layers):
        print(
            f"| {i} | {result.anisotropy[i]:.3f} | {result.self_similarity[i]:.3f} | "
            f"{result.adjusted_self_similarity[i]:.3f} | {result.intra_similarity[i]:.3f} | "
            f"{result.adjusted_intra_similarity[i]:.3f} | {result.norm_mean[i]:.2f} | "
            f"{result.functional_self_similarity[i]:.3f} | {result.content_self_similarity[i]:.3f} |"
        )
    if result.sentence is not None:
        s = result.sentence
        print(f"\nsentence level: {json.dumps({k: v for k, v in s.__dict__.items() if isinstance(v, float)})}")
    print(
        f"\n{len(sentences)} sentences, {result.n_tokens} tokens: forward {t1 - t0:.1f}s, "
        f"metrics {t3 - t2:.1f}s; written {out / 'analysis.json'} and {len(figures)} figures"
    )
    return 0


def cmd_paradigm_simulate(args: argparse.Namespace) -> int:
    from csrl.losses.simulate import simulate

    _threads(args.threads)
    t0 = time.perf_counter()
    summary = simulate(Path(args.out), grid=args.grid, anchors=args.anchors, negatives=args.negatives, seed=args.seed)
    print(json.dumps(summary, indent=2, default=str))
    print(f"figures and data in {args.out} ({time.perf_counter() - t0:.1f}s)")
    return 0


# --------------------------------------------------------------------------- data
def cmd_data_fetch(args: argparse.Namespace) -> int:
    from csrl.data.fetch import fetch

    dest = Path(args.dest) if args.dest else _data_dir(args)
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    report = fetch(dest, base_url=args.base_url, tasks=groups)
    print(report.to_text())
    print(f"\nuse it with: export CSRL_DATA_DIR={dest}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from csrl.data.manifest import check_data_dir

    root = Path(args.dir) if args.dir else _data_dir(args)
    if not root.is_dir():
        raise CsrlError(f"data folder {root} does not exist", hint="run `csrl data fetch` or set CSRL_DATA_DIR")
    report = check_data_dir(root)
    print(report.to_text())
    return 0 if report.ok else 1


def cmd_data_nli(args: argparse.Namespace) -> int:
    from csrl.data.nli import snli_triplets, write_triplets_csv

    folder = _data_dir(args) / "nli" / "senteval_snli"
    triplets = snli_triplets(folder, splits=tuple(args.splits.split(",")))
    out = write_triplets_csv(triplets, Path(args.out))
    print(f"{len(triplets)} triplets (premise, entailment, contradiction) written to {out}")
    return 0


# --------------------------------------------------------------------------- parser
def _add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="inference precision (bf16: autocast, ~2x faster on CPUs with bf16 units, STS within 0.02 of fp32)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="csrl", description="Contrastive sentence representation learning.", epilog=EPILOG)
    from csrl import __version__

    p.add_argument("--version", action="version", version=f"csrl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an encoder from a YAML recipe", epilog=EPILOG)
    t.add_argument("config", nargs="?", help="YAML recipe (see configs/)")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set train.lr=1e-5 --set loss.temperature=0.1",
    )
    t.add_argument("--output-dir", help="run folder (overrides output_dir)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument("--dry-run", action="store_true", help="resolve and validate the config, then stop")
    t.add_argument("--no-before", action="store_true", help="skip the STS table of the untrained model")
    _add_common(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="STS (SentEval protocol) and transfer evaluation", epilog=EPILOG)
    e.add_argument(
        "model", nargs="?", default="embedded:all-MiniLM-L6-v2", help="model folder, Hub id, or the embedded default"
    )
    e.add_argument("--pooler", help="override the pooler (cls, cls_before_pooler, mean, first_last_avg, last2_avg)")
    e.add_argument("--tasks", default="sts", help="sts, transfer or sts,transfer")
    e.add_argument("--aggregate", default="all", choices=["all", "mean", "wmean"], help="STS12-16 aggregate reported")
    e.add_argument("--protocol", default="fasttest", choices=["fasttest", "test", "fast"], help="transfer protocol")
    e.add_argument(
        "--mrpc-features",
        default="senteval",
        choices=["senteval", "full"],
        help="MRPC probe input: SentEval's [|u-v|, u*v] or [u, v, |u-v|, u*v]",
    )
    e.add_argument("--batch-size", type=int, default=128)
    _add_precision(e)
    e.add_argument("--device", default=None)
    e.add_argument("--output", "-o", help="write results as JSON")
    _add_common(e)
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("encode", help="embed a file of sentences (one per line) to .npy")
    c.add_argument("model", help="model folder, Hub id, or embedded:all-MiniLM-L6-v2")
    c.add_argument("--input", "-i", required=True)
    c.add_argument("--output", "-o", required=True)
    c.add_argument("--pooler")
    c.add_argument("--batch-size", type=int, default=128)
    _add_precision(c)
    c.add_argument("--normalize", action="store_true")
    c.add_argument("--device", default=None)
    _add_common(c)
    c.set_defaults(func=cmd_encode)

    a = sub.add_parser("analyze", help="embedding geometry: isotropy, self/intra-sentence similarity, norms, ...")
    a.add_argument("model", nargs="?", default="embedded:all-MiniLM-L6-v2")
    a.add_argument("--out", default="analysis", help="output folder (JSON + PNG)")
    a.add_argument("--pooler")
    a.add_argument("--sentences", help="a text file (one sentence per line) instead of STS-B test sentence1")
    a.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument(
        "--positive-threshold",
        type=float,
        default=POSITIVE_THRESHOLD,
        help="alignment positives: STS-B test pairs with gold > this",
    )
    a.add_argument("--batch-size", type=int, default=64)
    _add_common(a)
    a.set_defaults(func=cmd_analyze)

    pa = sub.add_parser("paradigm", help="the unified gradient paradigm (GD, W, R)")
    psub = pa.add_subparsers(dest="paradigm_command", required=True)
    ps = psub.add_parser("simulate", help="paper B's Section 3.1 simulation: GD/W/R maps")
    ps.add_argument("--out", default="paradigm-sim")
    ps.add_argument("--grid", type=int, default=100)
    ps.add_argument("--anchors", type=int, default=1000)
    ps.add_argument("--negatives", type=int, default=127)
    ps.add_argument("--seed", type=int, default=0)
    ps.add_argument("--threads", type=int, default=None)
    ps.set_defaults(func=cmd_paradigm_simulate)

    d = sub.add_parser("data", help="download or check the evaluation data")
    dsub = d.add_subparsers(dest="data_command", required=True)
    df = dsub.add_parser("fetch", help="download the standard sets (sha256-verified)")
    df.add_argument("--dest", help="target folder (default: --data-dir / $CSRL_DATA_DIR / ~/.cache/csrl/data)")
    df.add_argument(
        "--groups",
        default="sts",
        help="comma-separated: sts, sts-raw, sts-variants, transfer, nli, wiki, train, all (or one task)",
    )
    df.add_argument("--base-url", help="a mirror holding the same layout")
    df.add_argument("--data-dir")
    df.set_defaults(func=cmd_data_fetch)
    dc = dsub.add_parser("check", help="compare a data folder with the known sha256 sums")
    dc.add_argument("dir", nargs="?")
    dc.add_argument("--data-dir")
    dc.set_defaults(func=cmd_data_check)
    dn = dsub.add_parser("nli-triplets", help="build supervised SimCSE triplets from SentEval's SNLI files")
    dn.add_argument("--out", default="data/snli_triplets.csv", help="CSV with columns sent0,sent1,hard_neg")
    dn.add_argument("--splits", default="dev,test", help="SNLI splits to use (SentEval ships dev and test)")
    dn.add_argument("--data-dir")
    dn.set_defaults(func=cmd_data_nli)

    from csrl.cli.report_cmds import add_parsers as add_report_parsers

    add_report_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TRANSFORMERS_CACHE.*")
            return int(args.func(args))
    except CsrlError as exc:
        print(f"csrl: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("csrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
