"""Progress bars for encoding and evaluation: a tqdm bar with rate and ETA on a terminal, nothing in pipes.

``enabled=None`` (the default everywhere) decides per call: a bar only when the stream (stderr) is a
terminal and :func:`set_quiet` has not turned bars off; ``True``/``False`` force it on or off (a caller's
``--quiet``/``--progress`` flag, a notebook, a test). Output goes to stderr, so stdout stays clean for
results.

Two shapes, for the two ways work is counted:

* :func:`progress` wraps an iterable (batches of a loop);
* :func:`progress_counter` is a context manager yielding ``update(n)``, for code that reports done items
  through a callback (``Encoder.encode(..., progress=update)`` counts sentences).

The quiet switch is the one process-wide setting here: the CLI's ``--quiet`` sets it once, so library code
deep below needs no flag threaded through.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, TypeVar

__all__ = ["is_quiet", "progress", "progress_counter", "progress_enabled", "set_quiet"]

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """Turn automatic bars off (``True``) or back on (``False``) for this process; ``enabled=True`` still shows."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def progress_enabled(enabled: bool | None = None, *, file: IO[str] | None = None) -> bool:
    """``enabled`` when given; otherwise whether ``file`` (default: stderr) is a terminal and bars are not quiet."""
    if enabled is not None:
        return bool(enabled)
    if _quiet:
        return False
    stream = file if file is not None else sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _bar(total: int | None, desc: str, unit: str, file: IO[str] | None, iterable: Iterable[Any] | None = None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc or None,
        unit=unit,
        file=file if file is not None else sys.stderr,
        dynamic_ncols=True,
        leave=True,
    )


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    enabled: bool | None = None,
    *,
    unit: str = "it",
    file: IO[str] | None = None,
) -> Iterator[T]:
    """Iterate over ``iterable``, with a bar (count, rate, ETA) when enabled (see :func:`progress_enabled`).

    ``total``: the number of items when ``iterable`` has no ``len`` (the ETA needs it). Disabled, this is
    ``iter(iterable)``: no tqdm import, no output."""
    if not progress_enabled(enabled, file=file):
        return iter(iterable)
    return iter(_bar(total, desc, unit, file, iterable))


@contextmanager
def progress_counter(
    total: int,
    desc: str = "",
    enabled: bool | None = None,
    *,
    unit: str = "it",
    file: IO[str] | None = None,
) -> Iterator[Callable[[int], None]]:
    """A bar over ``total`` items advanced by the yielded ``update(n)`` (``n`` items done); closed on exit.

    Disabled, ``update`` does nothing. Example: ``with progress_counter(len(s), "encode", unit="sent") as
    update: encoder.encode(s, progress=update)``."""
    if not progress_enabled(enabled, file=file):
        yield lambda n: None
        return
    bar = _bar(total, desc, unit, file)

    def update(n: int) -> None:
        bar.update(n)

    try:
        yield update
    finally:
        bar.close()
