"""``csrl pretrain``: masked-language-model pretraining from a YAML recipe.

Hooked into :func:`csrl.cli.main.build_parser` by ``add_parsers(sub)``. Parses, calls
:func:`csrl.pipelines.pretrain.pretrain_run` and prints what it returns.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from csrl.cli import options as opt
from csrl.cli.common import data_dir_from
from csrl.errors import CsrlError

__all__ = ["add_parsers", "cmd_pretrain"]


def cmd_pretrain(args: argparse.Namespace) -> int:
    from csrl.pipelines.pretrain import pretrain_run, resolve_pretrain_config

    if args.dry_run:
        cfg = resolve_pretrain_config(args.config, args.set or (), resume=args.resume, output_dir=args.output_dir)
        print(cfg.to_json())
        print("dry run: the config resolves and validates; nothing was read or trained", file=sys.stderr)
        return 0
    if args.init_only:
        from csrl.pipelines.pretrain import pretrain_init

        if args.resume:
            raise CsrlError("--init-only saves a new run's initial weights; it cannot be used with --resume")
        out = pretrain_init(args.config, args.set or (), output_dir=args.output_dir)
        print(f"model (untrained, the run's initial weights): {out}  (csrl analyze {out})")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    res = pretrain_run(
        args.config, args.set or (), resume=args.resume, output_dir=args.output_dir, data_dir=data_dir_from(args)
    )
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return 0
    score = "" if res.heldout is None else f"  held-out MLM accuracy: {res.heldout['mlm/accuracy']:.4f}"
    print(f"\nrun: {res.run_dir}  steps: {res.steps}{score}  time: {time.perf_counter() - t0:.0f}s")
    print(f"model: {res.model_dir}  (csrl eval {res.model_dir} --pooler mean)")
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``pretrain`` to the ``csrl`` subparsers."""
    p = sub.add_parser(
        "pretrain",
        help="masked-language-model pretraining (BERT-style MLM) from a YAML recipe",
        epilog="Recipes: configs/pretrain-mlm-cpu.yaml, configs/pretrain-mlm-gpu.yaml. Docs: docs/pretrain.md.",
    )
    p.add_argument("config", nargs="?", type=opt.config_file, help="YAML recipe (see configs/pretrain-*.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. --set train.max_steps=100")
    p.add_argument("--output-dir", type=opt.run_output_dir, help="run folder (overrides output_dir)")
    p.add_argument("--resume", metavar="RUN_DIR", type=opt.run_dir, help="continue a run from its last checkpoint")
    p.add_argument("--dry-run", action="store_true", help="resolve and validate the config, then stop")
    p.add_argument(
        "--init-only",
        action="store_true",
        help="save the run's initial (untrained, random-init) model to OUTPUT_DIR/model and stop: the baseline",
    )
    p.add_argument(
        "--data-dir",
        type=opt.data_dir,
        help="data folder: relative corpus paths are read from it (default: $CSRL_DATA_DIR or ~/.cache/csrl/data)",
    )
    p.add_argument("--threads", type=opt.threads, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_pretrain)
