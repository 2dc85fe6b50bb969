"""Numeric precision: the one place that maps a precision name to an autocast dtype and context.

Used by training (``train.precision``) and by inference (``csrl eval/encode --precision``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch

from csrl.errors import CsrlError

PRECISIONS = ("fp32", "bf16", "fp16")

AutocastFactory = Callable[[], contextlib.AbstractContextManager[Any]]


def autocast_dtype(precision: str, device_type: str, *, setting: str = "precision") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device_type`` (None for fp32).

    ``setting`` names the option in messages (``train.precision``, ``--precision``).
    """
    if precision not in PRECISIONS:
        raise CsrlError(f"{setting} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "fp16" and device_type != "cuda":
        raise CsrlError(f"{setting}={precision} needs a CUDA device", hint=f"on CPU use {setting}=bf16 (or fp32)")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast_factory(device: torch.device, precision: str, *, setting: str = "train.precision") -> AutocastFactory:
    """A zero-argument factory of autocast contexts (a fresh context per use; fp32: no autocast)."""
    dtype = autocast_dtype(precision, device.type, setting=setting)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


__all__ = ["PRECISIONS", "AutocastFactory", "autocast_dtype", "autocast_factory"]
