"""``csrl posthoc fit``: BERT-whitening or all-but-the-top fitted on a named corpus, saved in a new model folder.

Hooked into :func:`csrl.cli.main.build_parser` by ``add_parsers(sub)``. Parses, calls
:func:`csrl.models.posthoc.fit_posthoc` and prints what it wrote (docs/models.md, "Post-hoc isotropy").
"""

from __future__ import annotations

import argparse
from typing import Any

from csrl.cli import options as opt
from csrl.cli.common import data_dir_from

__all__ = ["add_parsers", "cmd_posthoc_fit"]

MAX_DIMS = 1 << 16  # no sentence encoder's embedding is wider


def cmd_posthoc_fit(args: argparse.Namespace) -> int:
    from csrl.models.posthoc import fit_posthoc

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    res = fit_posthoc(
        args.model,
        args.corpus,
        method=args.method,
        dims=args.dims,
        components=args.components,
        out=args.out,
        limit=args.limit,
        pooler=args.pooler,
        data_dir=data_dir_from(args),
        batch_size=args.batch_size,
        device=args.device,
        overwrite=args.overwrite,
    )
    rec, t = res.record, res.transform
    what = f"D={t.components} top directions removed" if t.method == "abtt" else f"{t.dims} of {t.input_dim} dims"
    print(f"{t.method}: {what}, fitted on {rec['corpus_sentences']} sentences of {rec['corpus']}")
    if rec["float32_error_estimate"] > 1e-3:
        print(
            f"note: the saved float32 module's outputs carry rounding up to about {rec['float32_error_estimate']:.1e} "
            "(directions of tiny variance are scaled up); --dims keeps only the larger ones"
        )
    print(f"model: {res.out}  (module {rec['module']}; csrl eval {res.out})")
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``posthoc fit`` to the ``csrl`` subparsers."""
    p = sub.add_parser("posthoc", help="post-hoc isotropy: BERT-whitening, all-but-the-top (docs/models.md)")
    psub = p.add_subparsers(dest="posthoc_command", required=True)
    f = psub.add_parser(
        "fit",
        help="fit whitening or ABTT on a corpus and save the model with it as a Dense module",
        epilog="Docs: docs/models.md, section Post-hoc isotropy. STS/SICK test files are refused as corpora.",
    )
    f.add_argument("model", help="model folder, Hub id, or embedded:all-MiniLM-L6-v2")
    f.add_argument("--method", default="whitening", choices=["whitening", "abtt"], help="the transform")
    f.add_argument(
        "--corpus",
        required=True,
        type=opt.sentence_file.named("corpus file"),
        help="the fit sentences, one per line (not an STS/SICK test file)",
    )
    f.add_argument("--out", required=True, type=opt.output_dir.named("output folder"), help="the new model folder")
    f.add_argument(
        "--dims",
        type=opt.IntOption(1, MAX_DIMS, "dimension"),
        default=None,
        help="whitening: keep the K directions of largest variance (default: all of non-negligible variance)",
    )
    f.add_argument(
        "--components",
        type=opt.IntOption(0, MAX_DIMS, "component count"),
        default=None,
        help="abtt: remove the top D principal directions (default: round(dim / 100), at least 1)",
    )
    f.add_argument("--limit", type=opt.positive_int, default=None, help="fit on the first N sentences only")
    f.add_argument("--pooler", help="override the pooler (default: the model folder's own)")
    f.add_argument("--batch-size", type=opt.batch_size, default=128)
    f.add_argument("--device", type=opt.device, default=None)
    f.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    f.add_argument(
        "--data-dir",
        type=opt.data_dir,
        help="data folder whose STS/SICK test files are refused as corpora (default: $CSRL_DATA_DIR or "
        "~/.cache/csrl/data)",
    )
    f.add_argument("--threads", type=opt.threads, default=None, help="torch CPU threads")
    f.add_argument("--quiet", "-q", action="store_true", help="no progress bars (they show only on a terminal anyway)")
    f.set_defaults(func=cmd_posthoc_fit)
