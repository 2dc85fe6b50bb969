"""``csrl`` command line: train, eval, encode, analyze, paradigm, data.

Only this module reads argv and the environment (``CSRL_DATA_DIR``). User mistakes raise
:class:`~csrl.errors.CsrlError`, which ``main`` prints as a clear message and turns into exit code 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from csrl.cli import options as opt
from csrl.cli.common import data_dir_from
from csrl.data.sts import POSITIVE_THRESHOLD
from csrl.errors import CsrlError

POOLER_HELP = (
    "override the pooler: cls, cls_before_pooler, mean, first_last_avg, last2_avg, max, mean_sqrt_len, "
    "weightedmean, lasttoken, prompt (PromptBERT's [MASK] state; a base model gets the default template) "
    "(default: the model folder's own)"
)
EPILOG = "Docs: README.md. Data: set CSRL_DATA_DIR or pass --data-dir (csrl data fetch downloads the sets)."


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        type=opt.data_dir,
        help="data folder in the SentEval layout (default: $CSRL_DATA_DIR or ~/.cache/csrl/data)",
    )
    p.add_argument("--threads", type=opt.threads, default=None, help="torch CPU threads")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars (they show only on a terminal anyway)")


# --------------------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    from csrl.evaluate.sts import markdown_table
    from csrl.pipelines.train import resolve_run_config, train_run

    if args.dry_run:
        cfg = resolve_run_config(args.config, args.set or (), resume=args.resume, output_dir=args.output_dir)
        print(cfg.to_json())
        print("dry run: the config resolves and validates; nothing was downloaded or trained", file=sys.stderr)
        return 0
    _threads(args.threads)
    t0 = time.perf_counter()
    res = train_run(
        args.config,
        args.set or (),
        resume=args.resume,
        output_dir=args.output_dir,
        data_dir=data_dir_from(args),
        eval_before=not args.no_before,
        overwrite=args.overwrite,
    )
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
def cmd_eval(args: argparse.Namespace) -> int:
    from csrl.pipelines.evaluate import evaluate_model, parse_task_groups

    _threads(args.threads)
    parse_task_groups(args.tasks)  # a bad --tasks fails before the model is loaded
    ev = evaluate_model(
        args.model,
        data_dir=data_dir_from(args),
        tasks=args.tasks,
        pooler=args.pooler,
        aggregate=args.aggregate,
        protocol=args.protocol,
        mrpc_features=args.mrpc_features,
        batch_size=args.batch_size,
        precision=args.precision,
        device=args.device,
        output=args.output,
        strict=args.strict,
        cache=not args.no_cache,  # the folder: $CSRL_CACHE_DIR, else $XDG_CACHE_HOME/csrl/embeddings, else ~/.cache
        dims=args.dims,
    )
    modified = ev.data_check.summary() if ev.data_check is not None and not ev.data_check.ok else ""
    if modified:
        print(f"WARNING: MODIFIED DATA: {modified}\n")
    precision = ev.precision + (" (auto)" if args.precision == "auto" else "")
    if ev.sts is not None:
        print(ev.sts_markdown())
        print(
            f"\n{ev.sts.n_unique_sentences} unique sentences encoded in {ev.sts.seconds_encode:.1f}s "
            f"(total {ev.sts.seconds_total:.1f}s); STS12-16 aggregate: {args.aggregate}; precision: {precision}"
        )
    if ev.transfer is not None:
        print(ev.transfer.to_markdown())
    if ev.embedding_cache is not None:
        print(ev.embedding_cache.summary() + "; --no-cache turns it off")
    if modified:
        print("\nWARNING: these scores come from modified data (see above), not comparable with published ones")
    if args.output:
        print(f"results written to {args.output}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from csrl.pipelines.encode import encode_file

    _threads(args.threads)
    emb = encode_file(
        args.model,
        args.input,
        args.output,
        pooler=args.pooler,
        batch_size=args.batch_size,
        precision=args.precision,
        normalize=args.normalize,
        device=args.device,
    )
    print(f"{emb.shape[0]} embeddings of dimension {emb.shape[1]} written to {args.output}")
    return 0


# --------------------------------------------------------------------------- analysis
def cmd_analyze_compare(args: argparse.Namespace) -> int:
    from csrl.pipelines.analyze import compare_analyses

    named: dict[str, str] = {}
    for item in args.analyses:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CsrlError(f"{item!r}: expected NAME=PATH", hint="e.g. mlm=runs/analysis/mlm")
        if name in named:
            raise CsrlError(f"the name {name!r} is given twice", hint="give every analysis its own name")
        named[name] = path
    print(compare_analyses(named, Path(args.out) if args.out else None))
    if args.out:
        print(f"\nfigure: {Path(args.out) / 'layer_metrics_compare.png'}")
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from csrl.analysis.tables import layer_table_markdown, sentence_summary
    from csrl.pipelines.analyze import analyze_model

    _threads(args.threads)
    out = Path(args.out)
    result = analyze_model(
        args.model,
        sentences=Path(args.sentences) if args.sentences else None,
        data_dir=data_dir_from(args),
        limit=args.limit,
        seed=args.seed,
        positive_threshold=args.positive_threshold,
        batch_size=args.batch_size,
        pooler=args.pooler,
        out_dir=out,
        precision=args.precision,
    )
    print(layer_table_markdown(result))
    if result.sentence is not None:
        summary = json.dumps(sentence_summary(result))
        print(f"\nsentence level: {summary}  (the pooled vector, before the folder's post-pooling modules)")
    after = result.extra.get("sentence_after_tail")
    if after:
        shown = {k: v for k, v in after.items() if isinstance(v, int | float) or k == "modules"}
        print(f"sentence level after {' -> '.join(after['modules'])}: {json.dumps(shown)}")
    x = result.extra
    print(
        f"\n{result.n_sentences} sentences, {result.n_tokens} tokens: forward {x['seconds_forward']:.1f}s, "
        f"metrics {x['seconds_metrics']:.1f}s; written {out / 'analysis.json'} and {len(x['figures'])} figures"
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

    dest = Path(args.dest) if args.dest else data_dir_from(args)
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    report = fetch(dest, base_url=args.base_url, tasks=groups)
    print(report.to_text())
    print(f"\nuse it with: export CSRL_DATA_DIR={dest}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from csrl.data.manifest import check_data_dir

    root = Path(args.dir) if args.dir else data_dir_from(args)
    if not root.is_dir():
        raise CsrlError(f"data folder {root} does not exist", hint="run `csrl data fetch` or set CSRL_DATA_DIR")
    report = check_data_dir(root)
    print(report.to_text())
    return 0 if report.ok else 1


def cmd_data_nli(args: argparse.Namespace) -> int:
    from csrl.data.nli import snli_triplets, write_triplets_csv

    folder = data_dir_from(args) / "nli" / "senteval_snli"
    triplets = snli_triplets(folder, splits=tuple(args.splits.split(",")))
    out = write_triplets_csv(triplets, Path(args.out))
    print(f"{len(triplets)} triplets (premise, entailment, contradiction) written to {out}")
    return 0


# --------------------------------------------------------------------------- parser
def _add_precision(p: argparse.ArgumentParser, default: str = "fp32") -> None:
    from csrl.utils.precision import PRECISIONS

    p.add_argument(
        "--precision",
        default=default,
        choices=PRECISIONS,
        help=f"inference precision (default {default}). auto: bf16 where the CPU (AVX512_BF16/AMX) or GPU has "
        "native bf16, else fp32. bf16: autocast, ~2x faster on such CPUs (STS within 0.02 of fp32), but "
        "emulated and 10-25x slower on CPUs without. fp16: CUDA only",
    )


def build_parser() -> argparse.ArgumentParser:
    p = opt.CsrlArgumentParser(prog="csrl", description="Contrastive sentence representation learning.", epilog=EPILOG)
    from csrl import __version__

    p.add_argument("--version", action="version", version=f"csrl {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an encoder from a YAML recipe", epilog=EPILOG)
    t.add_argument("config", nargs="?", type=opt.config_file, help="YAML recipe (see configs/)")
    t.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set train.lr=1e-5 --set loss.temperature=0.1",
    )
    t.add_argument("--output-dir", type=opt.run_output_dir, help="run folder (overrides output_dir)")
    t.add_argument("--resume", metavar="RUN_DIR", type=opt.run_dir, help="continue a run from its last checkpoint")
    t.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a folder that holds another run (its records are moved to RUN_DIR/overwritten/)",
    )
    t.add_argument("--dry-run", action="store_true", help="resolve and validate the config, then stop")
    t.add_argument("--no-before", action="store_true", help="skip the STS table of the untrained model")
    _add_common(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="STS (SentEval protocol) and transfer evaluation", epilog=EPILOG)
    e.add_argument(
        "model", nargs="?", default="embedded:all-MiniLM-L6-v2", help="model folder, Hub id, or the embedded default"
    )
    e.add_argument("--pooler", help=POOLER_HELP)
    e.add_argument("--tasks", default="sts", help="sts, transfer or sts,transfer")
    e.add_argument("--aggregate", default="all", choices=["all", "mean", "wmean"], help="STS12-16 aggregate reported")
    e.add_argument("--protocol", default="fasttest", choices=["fasttest", "test", "fast"], help="transfer protocol")
    e.add_argument(
        "--mrpc-features",
        default="senteval",
        choices=["senteval", "full"],
        help="MRPC probe input: SentEval's [|u-v|, u*v] or [u, v, |u-v|, u*v]",
    )
    e.add_argument("--batch-size", type=opt.batch_size, default=128)
    _add_precision(e)
    e.add_argument("--device", type=opt.device, default=None)
    e.add_argument("--output", "-o", type=opt.output_file.named("results file"), help="write results as JSON")
    e.add_argument(
        "--strict",
        action="store_true",
        help="refuse data files whose sha256 differs from the data manifest (without it: a warning, and "
        '"data_check" in the JSON)',
    )
    e.add_argument(
        "--no-cache",
        action="store_true",
        help="encode without the embedding cache (default: reuse the embeddings of an unchanged model and settings "
        "from $CSRL_CACHE_DIR, else ~/.cache/csrl/embeddings; bounded by $CSRL_CACHE_MAX_BYTES, default 2G)",
    )
    e.add_argument(
        "--dims",
        type=opt.dims,
        default=(),
        help="STS also on the first m coordinates of each embedding, for each m (e.g. 64,128,256: Matryoshka "
        "embeddings); encoded once at full width, one row per m",
    )
    _add_common(e)
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("encode", help="embed a file of sentences (one per line) to .npy")
    c.add_argument("model", help="model folder, Hub id, or embedded:all-MiniLM-L6-v2")
    c.add_argument("--input", "-i", required=True, type=opt.sentence_file.named("input file"))
    c.add_argument("--output", "-o", required=True, type=opt.output_file.named("output file"), help=".npy file")
    c.add_argument("--pooler", help=POOLER_HELP)
    c.add_argument("--batch-size", type=opt.batch_size, default=128)
    _add_precision(c, default="auto")
    c.add_argument("--normalize", action="store_true")
    c.add_argument("--device", type=opt.device, default=None)
    _add_common(c)
    c.set_defaults(func=cmd_encode)

    a = sub.add_parser("analyze", help="embedding geometry: isotropy, self/intra-sentence similarity, norms, ...")
    a.add_argument("model", nargs="?", default="embedded:all-MiniLM-L6-v2")
    a.add_argument("--out", default="analysis", type=opt.output_dir, help="output folder (JSON + PNG)")
    a.add_argument("--pooler", help=POOLER_HELP)
    a.add_argument(
        "--sentences",
        type=opt.sentence_file,
        help="a text file (one sentence per line) instead of STS-B test sentence1",
    )
    a.add_argument("--limit", type=opt.positive_int, default=None, help="use only the first N sentences")
    a.add_argument("--seed", type=opt.seed, default=0)
    a.add_argument(
        "--positive-threshold",
        type=opt.FloatOption(0.0, 5.0, hi_open=True, name="gold score"),
        default=POSITIVE_THRESHOLD,
        help="alignment positives: STS-B test pairs with gold > this (gold scores are 0 to 5)",
    )
    a.add_argument("--batch-size", type=opt.batch_size, default=64)
    _add_precision(a)
    _add_common(a)
    a.set_defaults(func=cmd_analyze)

    ac = sub.add_parser(
        "analyze-compare",
        help="several csrl analyze outputs side by side: per-metric tables and one per-layer figure",
        epilog="e.g. csrl analyze-compare random=runs/analysis/random mlm=runs/analysis/mlm --out runs/analysis",
    )
    ac.add_argument("analyses", nargs="+", metavar="NAME=PATH", help="a name and a csrl analyze --out folder")
    ac.add_argument("--out", type=opt.output_dir, help="write layer_metrics_compare.png into this folder")
    ac.set_defaults(func=cmd_analyze_compare)

    pa = sub.add_parser("paradigm", help="the unified gradient paradigm (GD, W, R)")
    psub = pa.add_subparsers(dest="paradigm_command", required=True)
    ps = psub.add_parser("simulate", help="paper B's Section 3.1 simulation: GD/W/R maps")
    ps.add_argument("--out", default="paradigm-sim", type=opt.output_dir, help="output folder (CSV, JSON, PNG)")
    ps.add_argument("--grid", type=opt.IntOption(2, 1000), default=100, help="points per axis")
    ps.add_argument("--anchors", type=opt.IntOption(2, 10_000), default=1000, help="simulated batches per point")
    ps.add_argument("--negatives", type=opt.IntOption(2, 4096), default=127, help="negatives per batch")
    ps.add_argument("--seed", type=opt.seed, default=0)
    ps.add_argument("--threads", type=opt.threads, default=None)
    ps.set_defaults(func=cmd_paradigm_simulate)

    d = sub.add_parser("data", help="download or check the evaluation data")
    dsub = d.add_subparsers(dest="data_command", required=True)
    df = dsub.add_parser("fetch", help="download the standard sets (sha256-verified)")
    df.add_argument(
        "--dest",
        type=opt.output_dir.named("destination folder"),
        help="target folder (default: --data-dir / $CSRL_DATA_DIR / ~/.cache/csrl/data)",
    )
    df.add_argument(
        "--groups",
        default="sts",
        help="comma-separated: sts, sts-raw, sts-variants, transfer, nli, wiki, train, all (or one task)",
    )
    df.add_argument("--base-url", help="a mirror holding the same layout")
    df.add_argument("--data-dir", type=opt.output_dir.named("data folder"), help="where the sets go (as --dest)")
    df.set_defaults(func=cmd_data_fetch)
    dc = dsub.add_parser("check", help="compare a data folder with the known sha256 sums")
    dc.add_argument("dir", nargs="?", type=opt.data_dir, help="data folder (default: --data-dir, $CSRL_DATA_DIR)")
    dc.add_argument("--data-dir", type=opt.data_dir)
    dc.set_defaults(func=cmd_data_check)
    dn = dsub.add_parser("nli-triplets", help="build supervised SimCSE triplets from SentEval's SNLI files")
    dn.add_argument(
        "--out", default="data/snli_triplets.csv", type=opt.output_file, help="CSV with columns sent0,sent1,hard_neg"
    )
    dn.add_argument("--splits", default="dev,test", help="SNLI splits to use (SentEval ships dev and test)")
    dn.add_argument("--data-dir", type=opt.data_dir)
    dn.set_defaults(func=cmd_data_nli)

    from csrl.cli.report_cmds import add_parsers as add_report_parsers

    add_report_parsers(sub)
    from csrl.cli.pretrain_cmds import add_parsers as add_pretrain_parsers

    add_pretrain_parsers(sub)
    from csrl.cli.hub_cmds import add_parsers as add_hub_parsers

    add_hub_parsers(sub)
    from csrl.cli.posthoc_cmds import add_parsers as add_posthoc_parsers

    add_posthoc_parsers(sub)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C: a run unwinds the same way (lock released, the message saying how to
    resume) and the command exits with 143 (128 + SIGTERM) instead of 130."""


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one unwinding; a second SIGTERM must not cut it short
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed a usage error (code 2), or --help / --version (0)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:  # only the main thread may set handlers (main() called from another thread keeps the default)
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        previous = None
    if getattr(args, "quiet", False):
        from csrl.utils.progress import set_quiet

        set_quiet(True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TRANSFORMERS_CACHE.*")
            return int(args.func(args))
    except CsrlError as exc:
        print(f"csrl: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"csrl: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except OSError as exc:  # a full disk outside the atomic writers (which say more): still no traceback
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"csrl: error: no space left on device{f' ({exc.filename})' if exc.filename else ''}", file=sys.stderr)
        print("  hint: free some space, then run the command again (csrl train --resume RUN_DIR continues a run)",
              file=sys.stderr)  # fmt: skip
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
