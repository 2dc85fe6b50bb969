"""Numeric precision: the one place that maps a precision name to an autocast dtype and context.

Used by training (``train.precision``) and by inference (``csrl eval/encode/analyze --precision``).

``auto`` picks ``bf16`` where the device computes it natively and ``fp32`` elsewhere
(:func:`resolve_precision`): CUDA devices that report bf16 support, and CPUs with AVX512_BF16 or AMX-BF16
units. On a CPU without them (AVX2-only, or AVX-512 without BF16) PyTorch emulates bf16 matrix products,
which measured 10-25x slower than fp32 per training step, so an explicit ``bf16`` there is allowed but
warned about, once per process. ARM CPUs resolve to fp32 (their bf16 paths are not measured here).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from csrl.errors import CsrlError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
EMULATED_BF16 = (
    "emulated bf16 on this CPU is typically 10-25x slower than fp32; use precision=auto or fp32 "
    "(this CPU has no AVX512_BF16 or AMX-BF16 units)"
)
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

AutocastFactory = Callable[[], contextlib.AbstractContextManager[Any]]


class PrecisionWarning(UserWarning):
    """A precision that works but is much slower than the alternatives on this machine."""


_warned: set[str] = set()  # messages already warned about in this process (warn once)


def _torch_cpu_bf16() -> bool | None:
    """Native CPU bf16 as torch detects it (cpuinfo), or None when this torch cannot say."""
    cpu = getattr(torch, "cpu", None)
    caps = getattr(cpu, "get_capabilities", None)  # torch >= 2.10: a mapping of every CPU feature
    if caps is not None:
        try:
            found = caps()
            return any(bool(found.get(flag, False)) for flag in _CPU_BF16_FLAGS)
        except Exception:  # a detection failure falls back to /proc/cpuinfo
            pass
    probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_cpu_support_avx512bf16")]
    probe = next((p for p in probes if p is not None), None)
    if probe is None:
        return None
    try:
        return bool(probe())
    except Exception:
        return None


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpuinfo_has_bf16(text: str) -> bool:
    """Whether a ``/proc/cpuinfo`` text lists ``avx512_bf16`` or ``amx_bf16`` on its first ``flags`` line."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return any(flag in value.split() for flag in _CPU_BF16_FLAGS)
    return False


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA's own check; on CPU, AVX512_BF16 or AMX-BF16
    (torch's CPU feature detection, else the ``flags`` of ``/proc/cpuinfo``). Other devices: False."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if dev.type != "cpu":
        return False
    found = _torch_cpu_bf16()
    return found if found is not None else cpuinfo_has_bf16(_read_cpuinfo())


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, PrecisionWarning, stacklevel=3)


def resolve_precision(precision: str, device: torch.device | str, *, setting: str = "precision") -> str:
    """The precision that runs: ``auto`` -> ``bf16`` where :func:`native_bf16`, else ``fp32``; others as given.

    An explicit ``bf16`` on a CPU without native bf16 warns once per process (:data:`EMULATED_BF16`).
    ``setting`` names the option in messages (``train.precision``, ``--precision``).
    """
    if precision not in PRECISIONS:
        raise CsrlError(f"{setting} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dev = torch.device(device)
    if precision == "auto":
        return "bf16" if native_bf16(dev) else "fp32"
    if precision == "bf16" and dev.type == "cpu" and not native_bf16(dev):
        _warn_once(EMULATED_BF16)
    return precision


def autocast_dtype(precision: str, device_type: str, *, setting: str = "precision") -> torch.dtype | None:
    """The autocast dtype for ``precision`` (``auto`` resolved first) on ``device_type`` (None for fp32).

    ``setting`` names the option in messages (``train.precision``, ``--precision``).
    """
    precision = resolve_precision(precision, device_type, setting=setting)
    if precision == "fp32":
        return None
    if precision == "fp16" and device_type != "cuda":
        raise CsrlError(f"{setting}={precision} needs a CUDA device", hint=f"on CPU use {setting}=auto (or bf16, fp32)")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast_factory(device: torch.device, precision: str, *, setting: str = "train.precision") -> AutocastFactory:
    """A zero-argument factory of autocast contexts (a fresh context per use; fp32: no autocast)."""
    dtype = autocast_dtype(precision, device.type, setting=setting)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


__all__ = [
    "EMULATED_BF16",
    "PRECISIONS",
    "AutocastFactory",
    "PrecisionWarning",
    "autocast_dtype",
    "autocast_factory",
    "cpuinfo_has_bf16",
    "native_bf16",
    "resolve_precision",
]
