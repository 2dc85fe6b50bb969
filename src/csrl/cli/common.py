"""Helpers shared by the ``csrl`` commands (the only code that reads argv and the environment)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["data_dir_from"]


def data_dir_from(args: argparse.Namespace) -> Path:
    """The data folder: ``--data-dir``, else ``$CSRL_DATA_DIR``, else ``$XDG_CACHE_HOME/csrl/data``, else
    :func:`csrl.data.sts.default_data_dir` (``~/.cache/csrl/data``). The library below never reads these."""
    if getattr(args, "data_dir", None):
        return Path(args.data_dir).expanduser()
    if os.environ.get("CSRL_DATA_DIR"):
        return Path(os.environ["CSRL_DATA_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "csrl" / "data"
    from csrl.data.sts import default_data_dir

    return default_data_dir()
