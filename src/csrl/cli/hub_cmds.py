"""``csrl push``: upload a run's best model to the Hugging Face Hub.

Hooked into :func:`csrl.cli.main.build_parser` by ``add_parsers(sub)``; parses, calls
:func:`csrl.pipelines.push.push_to_hub`, prints where the model went.
"""

from __future__ import annotations

import argparse
from typing import Any

from csrl.cli import options as opt


def cmd_push(args: argparse.Namespace) -> int:
    from csrl.pipelines.push import push_to_hub

    res = push_to_hub(args.run_dir, args.repo_id, private=args.private, token=args.token, commit_message=args.message)
    print(f"pushed {res.folder} ({res.n_files} files) to {res.repo_url}")
    print(f"commit: {res.commit_url}")
    return 0


def add_parsers(sub: Any) -> None:
    """Add ``push`` to the ``csrl`` subparsers."""
    p = sub.add_parser("push", help="upload a run's best model to the Hugging Face Hub (huggingface_hub)")
    p.add_argument(
        "run_dir",
        type=opt.existing_dir.named("run folder", hint="pass the output_dir of a csrl train run (or a model folder)"),
        help="a run folder (its best/ model is uploaded) or a saved model folder",
    )
    p.add_argument("--repo-id", required=True, help="the Hub repository, NAMESPACE/NAME (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token", help="Hugging Face token with write access (default: HF_TOKEN or `hf auth login`)")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_push)


__all__ = ["add_parsers", "cmd_push"]
