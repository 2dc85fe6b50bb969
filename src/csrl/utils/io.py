"""Atomic, durable file writes: a reader sees the old content or the new one, never a half-written file.

Every writer follows the same recipe: write to a hidden temporary beside the target
(``.<name>.<random>.tmp``, same directory so the final rename never crosses file systems), flush and
``fsync`` it, ``os.replace`` it onto the target, then ``fsync`` the directory so the rename itself
survives a power cut. On an exception the temporary is removed and the old file is left untouched. Only a
hard crash (SIGKILL, power loss) between creating and renaming the temporary can leave a
``.<name>.*.tmp`` file behind; the target is intact in that case too.

New files get the usual ``0o666 & ~umask`` permissions (not the ``0o600`` of ``tempfile``); a replaced
file keeps its mode.

A full disk (``ENOSPC``, or a quota: ``EDQUOT``) is a user-fixable condition, not a bug: the writers remove
their temporary and raise :class:`DiskFullError` (a :class:`~csrl.errors.CsrlError`, exit code 2) saying
where, about how much was needed and how much is free; the previous content stays in place.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from csrl.errors import CsrlError

__all__ = [
    "DiskFullError",
    "atomic_dir",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "disk_full_error",
    "fsync_dir",
    "fsync_file",
    "strict_json",
]


class DiskFullError(CsrlError):
    """No space left (or quota exceeded) where a file was being written; nothing half-written was left."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}" if n < 10e6 else f"{n / 1e6:.0f}"


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def disk_full_error(exc: BaseException, path: Path, needed: int, *, at_least: bool = False) -> DiskFullError | None:
    """``exc`` as a :class:`DiskFullError` when it is an ``ENOSPC``/``EDQUOT`` ``OSError``; else None.

    Call it after the temporary is removed, so that the free space it reports is what the user has.
    ``needed``: bytes the write needed (``at_least``: only a lower bound is known).
    """
    if not isinstance(exc, OSError) or exc.errno not in _NO_SPACE:
        return None
    free = _free_bytes(path.parent)
    need = f"{'more than' if at_least else 'about'} {_mb(needed)} MB"
    have = "unknown" if free is None else f"{_mb(free)} MB"
    what = "quota exceeded" if exc.errno == errno.EDQUOT else "no space left"
    return DiskFullError(
        f"{what} on {path}: needed {need}, {have} free",
        hint=f"free some space on the file system of {path.parent} (or write elsewhere), then run again",
    )


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename or new file inside ``path``) to disk; no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush an already written file's content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _current_umask() -> int:
    # Reading /proc avoids the set-and-restore race of os.umask() in multi-threaded programs.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _target_mode(path: Path, default: int) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return default & ~_current_umask()


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary + fsync + rename + directory fsync)."""
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    mode = _target_mode(path, 0o666)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        full = disk_full_error(exc, path, len(data))
        if full is not None:
            raise full from None
        raise
    fsync_dir(parent)


def atomic_write_text(path: Path | str, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` atomically; no newline translation (what you pass is what lands on disk)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: Path | str, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Serialise ``obj`` as UTF-8 JSON (plus a final newline) and write it atomically.

    The object is serialised before anything touches the disk, so an unserialisable value raises
    ``TypeError`` and leaves the old file as it was.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))


def _tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            try:
                total += Path(dirpath, name).lstat().st_size
            except OSError:
                pass
    return total


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath, name)
            if not p.is_symlink():
                fsync_file(p)
        fsync_dir(Path(dirpath))


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (POSIX, main thread) for the block; a signal that arrives meanwhile is delivered,
    and its Python handler runs, when the block ends."""
    import signal
    import threading

    hold = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}) if hold else None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _remove_tree(path: Path) -> None:
    """Delete a temporary tree even if a second Ctrl-C/SIGTERM arrives meanwhile (the first is being raised)."""
    for _ in range(3):
        try:
            shutil.rmtree(path, ignore_errors=True)
            return
        except BaseException:  # interrupted inside rmtree: finish the cleanup, the caller re-raises the first
            continue


@contextmanager
def atomic_dir(path: Path | str, *, expected_bytes: int | None = None) -> Iterator[Path]:
    """Build a directory in a temporary beside ``path`` and move it into place when the block succeeds.

    Usage::

        with atomic_dir(run_dir / "checkpoint-1000") as tmp:
            save_weights(tmp / "model.safetensors")
            atomic_write_json(tmp / "state.json", state)

    On success every file in the temporary is fsync'ed and the directory is renamed onto ``path``.
    An existing ``path`` is first renamed aside to ``.<name>.old-<random>/content`` and deleted only after
    the new directory is in place; if the second rename fails (or an interruption such as Ctrl-C lands
    between the two) the old directory is renamed back. POSIX has no atomic swap of two directories, so a
    hard crash between the two renames leaves ``path`` absent and the complete old copy at
    ``.<name>.old-*/content`` (restore it by renaming). If the block raises, the temporary is deleted and
    ``path`` is untouched; a full disk raises :class:`DiskFullError` (``expected_bytes``: the size the
    directory will have, for its message; else the bytes written so far).
    """
    path = Path(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    mode = _target_mode(path, 0o777)
    tmp: Path | None = None
    try:
        # Ctrl-C/SIGTERM are held while the temporary is made and named, so an interruption lands where the
        # handler below knows the name and deletes it (not between mkdtemp and the assignment).
        with _signals_held():
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    except BaseException as exc:
        if tmp is not None:
            _remove_tree(tmp)
        full = disk_full_error(exc, path, expected_bytes or 0, at_least=expected_bytes is None)
        if full is not None:
            raise full from None
        raise
    try:
        yield tmp
        os.chmod(tmp, mode)
        _fsync_tree(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=parent))
            try:
                os.rename(path, old / "content")
                os.rename(tmp, path)
            except BaseException:  # failed, or interrupted (Ctrl-C, SIGTERM) between the renames
                if not path.exists() and (old / "content").exists():
                    os.rename(old / "content", path)  # the old directory goes back
                shutil.rmtree(old, ignore_errors=True)  # empty, or the old copy of a new path already in place
                raise
            fsync_dir(parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
            fsync_dir(parent)
    except BaseException as exc:
        written = _tree_bytes(tmp) if isinstance(exc, OSError) else 0
        _remove_tree(tmp)
        needed = max(expected_bytes or 0, written)
        full = disk_full_error(exc, path, needed, at_least=expected_bytes is None)
        if full is not None:
            raise full from None
        raise


def strict_json(obj: Any) -> Any:
    """``obj`` made fit for strict JSON (``json.dumps(..., allow_nan=False)``), recursively.

    NaN and +-inf become ``None``; numpy scalars become Python numbers (then the same rule) and numpy
    arrays lists; mappings become dicts and tuples lists. Anything else is returned as it is.
    """
    if isinstance(obj, np.ndarray | np.generic):
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj
