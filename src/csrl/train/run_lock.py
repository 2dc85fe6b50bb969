"""A run owns its folder: one process at a time, one run per folder, and a resume that continues that run.

**The lock.** ``RUN_DIR/.lock`` (JSON: pid, host, start time, command) is created with
``O_CREAT | O_EXCL`` and held with ``fcntl.flock`` on an open descriptor for the whole run, then removed.
The kernel drops a ``flock`` when its process dies, however it dies, so a lock left by a crashed or
``kill -9``-ed run is recognised as stale (same host, and its ``flock`` is free or its pid is gone) and
taken over with a message. A second run into a folder whose lock is held is refused, naming the holder.
Sweeps lock their folder the same way (:mod:`csrl.sweep.runner`).

**The folder.** A new run refuses a folder that holds another run's records (:data:`RUN_RECORDS`) unless
it resumes (``--resume``) or overwrites (``--overwrite``: the old records are moved to
``RUN_DIR/overwritten/<time>/``, after the lock is held and the input is checked). A resume compares the
saved ``config.json`` with the new config (:func:`csrl.train.config.resume_changes`): a change of the
optimisation trajectory is refused with a readable diff; cadence changes (logging, evaluation,
checkpointing, threads) are applied and appended to ``RUN_DIR/resume_log.jsonl``. The training data is
compared by content: ``RUN_DIR/data_fingerprint.json`` holds the sha256 of every training file, written
when the run starts.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from csrl.errors import CsrlError
from csrl.train.checkpoint import latest_checkpoint
from csrl.train.config import RunConfig, build_config, resume_changes
from csrl.utils.io import atomic_write_json, atomic_write_text

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: the pid check alone decides
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
FINGERPRINT = "data_fingerprint.json"
RESUME_LOG = "resume_log.jsonl"
OVERWRITTEN = "overwritten"
RUN_RECORDS = ("config.json", "metrics.jsonl", "checkpoints", "best", "results", FINGERPRINT, RESUME_LOG)
"""What makes a folder hold a run (a new run into it is refused without --resume or --overwrite)."""
MOVED_ON_OVERWRITE = (*RUN_RECORDS, "tensorboard", "dynamics", "wandb", "wandb_run_id.txt", "mlruns",
                      "mlflow_run_id.txt")  # fmt: skip
YOUNG_LOCK_S = 10.0  # an empty lock file younger than this is being written by its creator

Log = Callable[[str], None]

__all__ = [
    "FINGERPRINT",
    "LOCK_FILE",
    "RESUME_LOG",
    "RUN_RECORDS",
    "Holder",
    "RunFolder",
    "RunLock",
    "acquire_lock",
    "check_run_folder",
    "data_fingerprint",
    "live_holder",
    "owned_run",
    "read_holder",
    "run_folder",
    "stopped_message",
]


# ----------------------------------------------------------------------------- the lock
@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a lock."""

    pid: int
    host: str
    started: float  # time.time() when it was taken
    command: str

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host} since {since} ({self.command})"


def _parse(raw: bytes) -> Holder | None:
    try:
        d = json.loads(raw.decode("utf-8"))
        return Holder(int(d["pid"]), str(d["host"]), float(d["started"]), str(d["command"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def _read_fd(fd: int) -> bytes:
    return os.pread(fd, 1 << 16, 0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:  # a zombie has exited: only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _try_flock(fd: int) -> bool | None:
    """Take the exclusive ``flock`` without waiting: True, False (held elsewhere), None (unsupported here)."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK / EOPNOTSUPP: a file system without flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class RunLock:
    """A held lock; :meth:`release` (idempotent) removes the lock file and drops the ``flock``."""

    def __init__(self, path: Path, fd: int, created: Path | None) -> None:
        self.path, self._created = path, created
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):  # unlink while still holding the flock: no one can grab a dead inode
                self.path.unlink()
        finally:
            os.close(fd)
        if self._created is not None:  # a folder this lock made, still empty (the run failed on its input)
            d = self.path.parent
            while True:
                try:
                    d.rmdir()
                except OSError:
                    break
                if d == self._created:
                    break
                d = d.parent

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _refused(path: Path, holder: Holder | None, what: str, why: str = "") -> CsrlError:
    who = holder.describe() if holder is not None else "another process (its lock file is unreadable)"
    return CsrlError(
        f"{path.parent} is in use by another {what}: {who}{why}",
        hint=f"wait for it to finish or stop it; if you are sure it is gone, delete {path} and run again",
    )


def _take_over(path: Path, me: bytes, what: str, log: Log) -> int | None:
    """Open an existing lock; the descriptor when it was stale and is now ours, None to retry, raise when held."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None  # released meanwhile
    keep = False
    try:
        flocked = _try_flock(fd)
        if not _same_file(fd, path):
            return None  # released and re-created meanwhile
        holder = _parse(_read_fd(fd))
        host = socket.gethostname()
        if flocked is False:
            raise _refused(path, holder, what)
        if holder is None:
            if time.time() - os.fstat(fd).st_mtime < YOUNG_LOCK_S:
                time.sleep(0.05)  # its creator is writing it
                return None
            reason = "an empty or unreadable lock file"
        elif holder.host != host:
            raise _refused(path, holder, what, " (another host: csrl cannot tell whether it still runs)")
        elif flocked is None and _pid_alive(holder.pid):
            raise _refused(path, holder, what)
        else:
            reason = "its process is gone" if not _pid_alive(holder.pid) else "its process no longer holds it"
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
        os.fsync(fd)
        who = holder.describe() if holder is not None else "an unknown process"
        log(f"taking over the stale lock of {who} in {path.parent}: {reason}")
        keep = True
        return fd
    finally:
        if not keep:
            os.close(fd)


def _lock_new(path: Path, me: bytes) -> int | None:
    """Create the lock file (``O_EXCL``) and flock it; None when it already exists."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    deadline = time.monotonic() + 5.0  # someone checking a young lock holds the flock for a moment
    while _try_flock(fd) is False:
        if time.monotonic() > deadline:
            os.close(fd)
            raise CsrlError(f"could not lock {path}: another process keeps its flock", hint="run again")
        time.sleep(0.01)
    os.pwrite(fd, me, 0)
    os.fsync(fd)
    return fd


def acquire_lock(folder: Path, *, command: str | None = None, what: str = "run", log: Log = print) -> RunLock:
    """Lock ``folder`` (created if missing) for this process; refuse when a live process holds it.

    ``what`` names the owner in messages (``run``, ``sweep``); ``command`` is recorded for whoever is refused
    (default: this process's command line).
    """
    folder = Path(folder)
    created = next((p for p in reversed([folder, *folder.parents]) if not p.exists()), None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    holder = Holder(os.getpid(), socket.gethostname(), time.time(), command or " ".join(sys.argv))
    me = json.dumps(asdict(holder)).encode()
    for _ in range(200):
        fd = _lock_new(path, me)
        if fd is None:
            fd = _take_over(path, me, what, log)
        if fd is not None:
            return RunLock(path, fd, created)
    raise CsrlError(f"could not lock {path}: it keeps changing under csrl", hint="is another run starting there?")


def read_holder(folder: Path) -> Holder | None:
    """The holder recorded in ``folder``'s lock file (alive or not), or None without a readable lock."""
    try:
        return _parse((Path(folder) / LOCK_FILE).read_bytes())
    except OSError:
        return None


def live_holder(folder: Path) -> Holder | None:
    """The process that holds ``folder``'s lock now (None: no lock, or a stale one)."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        holder = _parse(_read_fd(fd))
        flocked = _try_flock(fd)  # closing fd below drops it again
        if flocked is False:
            return holder or Holder(-1, "?", 0.0, "unknown (unreadable lock file)")
        if flocked is None and holder is not None and holder.host == socket.gethostname():
            return holder if _pid_alive(holder.pid) else None
        return None
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the folder
def run_folder(cfg: RunConfig) -> Path:
    """``cfg.output_dir`` as a path; an empty one (which would mean the current folder) is refused."""
    if not cfg.output_dir.strip():
        raise CsrlError("output_dir is empty", hint="give the run its own folder, e.g. --output-dir runs/my-run")
    return Path(cfg.output_dir)


def data_fingerprint(files: Sequence[Path]) -> dict[str, Any]:
    """Size and sha256 of each training file, in order (the paths are recorded, not compared)."""
    out = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out.append({"path": str(f), "bytes": f.stat().st_size, "sha256": h.hexdigest()})
    return {"files": out}


def _data_change(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    old, new = saved.get("files", []), now["files"]
    if [(f["bytes"], f["sha256"]) for f in old] == [(f["bytes"], f["sha256"]) for f in new]:
        return None
    if len(old) != len(new):
        return f"{len(old)} training file(s) at the start, {len(new)} now"
    for a, b in zip(old, new, strict=True):
        if (a["bytes"], a["sha256"]) != (b["bytes"], b["sha256"]):
            return (
                f"{b['path']}: {a['bytes']} bytes, sha256 {a['sha256'][:12]}... when the run started "
                f"(as {a['path']}); now {b['bytes']} bytes, sha256 {b['sha256'][:12]}..."
            )
    return None


_ABSENT = object()  # a key one of the two configs does not have


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


@dataclass
class RunFolder:
    """What :func:`check_run_folder` found, applied by :meth:`commit` once the input is checked."""

    path: Path
    cfg: RunConfig
    resume: bool
    fingerprint: dict[str, Any]
    saved_fingerprint: dict[str, Any] | None = None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # allowed (cadence) changes on resume
    overwrite: list[str] = field(default_factory=list)  # records to move aside

    def commit(self, log: Log, *, resumed_from: Path | None = None) -> None:
        """Move overwritten records aside, write ``config.json`` and the data fingerprint; log a resume."""
        d = self.path
        d.mkdir(parents=True, exist_ok=True)
        if self.overwrite:
            aside = d / OVERWRITTEN / time.strftime("%Y%m%d-%H%M%S")
            while aside.exists():
                aside = aside.with_name(aside.name + "-")
            aside.mkdir(parents=True)
            for name in self.overwrite:
                shutil.move(str(d / name), str(aside / name))
            log(f"--overwrite: the previous run's records ({', '.join(self.overwrite)}) were moved to {aside}")
        if not self.resume or self.changes or not (d / "config.json").exists():
            atomic_write_json(d / "config.json", self.cfg.to_dict())
        if self.saved_fingerprint is None:
            atomic_write_json(d / FINGERPRINT, self.fingerprint)
        if self.resume:
            entry = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "checkpoint": resumed_from.name if resumed_from is not None else None,
                "changes": {k: [None if a is _ABSENT else a, None if b is _ABSENT else b]
                            for k, (a, b) in self.changes.items()},
            }  # fmt: skip
            old = (d / RESUME_LOG).read_text(encoding="utf-8") if (d / RESUME_LOG).exists() else ""
            atomic_write_text(d / RESUME_LOG, old + json.dumps(entry) + "\n")
            for k, (a, b) in self.changes.items():
                log(f"resume: {k}: {_show(a)} -> {_show(b)} (recorded in {RESUME_LOG})")


def _records(d: Path) -> list[str]:
    return [name for name in RUN_RECORDS if (d / name).exists()]


def _check_resume(d: Path, cfg: RunConfig, folder: RunFolder, log: Log) -> None:
    if not (d / "config.json").is_file():
        raise CsrlError(f"cannot resume: {d} holds no run ({d / 'config.json'} not found)",
                        hint="start it with csrl train CONFIG")  # fmt: skip
    try:
        saved = build_config(json.loads((d / "config.json").read_text(encoding="utf-8")))
    except (ValueError, CsrlError) as exc:
        msg = exc.message if isinstance(exc, CsrlError) else str(exc)
        raise CsrlError(f"cannot resume: {d / 'config.json'} is not a valid run config ({msg})") from None
    refused, allowed = resume_changes(saved.to_dict(), cfg.to_dict(), absent=_ABSENT)
    if refused:
        diff = "\n".join(f"  {k}: {_show(a)} -> {_show(b)}" for k, (a, b) in refused.items())
        raise CsrlError(
            f"cannot resume {d}: these settings differ from the run's and would change its optimisation "
            f"trajectory:\n{diff}",
            hint="resume with the run's settings (drop those --set overrides), or train them as a new run "
            "(--output-dir NEW_DIR); logging, evaluation and checkpoint cadences may change on resume",
        )
    folder.changes = allowed
    fp = d / FINGERPRINT
    if not fp.exists():
        log(f"note: {d} has no {FINGERPRINT} (a run from before csrl recorded its data): "
            "the training data cannot be compared; recorded now")  # fmt: skip
        return
    folder.saved_fingerprint = json.loads(fp.read_text(encoding="utf-8"))
    change = _data_change(folder.saved_fingerprint, folder.fingerprint)
    if change is not None:
        raise CsrlError(
            f"cannot resume {d}: its training data changed since the run started ({change})",
            hint="resume with the same training files (compared by content, not by path), or start a new run",
        )


def check_run_folder(
    cfg: RunConfig, train_files: Sequence[Path], *, resume: bool, overwrite: bool, log: Log
) -> RunFolder:
    """Check that ``cfg`` may write into its folder (read-only; :meth:`RunFolder.commit` writes).

    A fresh run refuses a folder holding another run's records unless ``overwrite``; a resume refuses a
    folder without a run, a trajectory change (with the diff), and changed training data.
    """
    if resume and overwrite:
        raise CsrlError("--resume and --overwrite contradict each other", hint="choose one")
    d = run_folder(cfg)
    folder = RunFolder(d, cfg, resume, data_fingerprint(train_files))
    if resume:
        _check_resume(d, cfg, folder, log)
        return folder
    found = _records(d)
    if found and not overwrite:
        raise CsrlError(
            f"{d} already holds a run ({', '.join(found)}); a new run would mix its records with the old ones",
            hint=f"continue it with csrl train --resume {d}, start over with --overwrite (the old records are "
            f"moved to {d / OVERWRITTEN}/), or choose another --output-dir",
        )
    if overwrite:
        folder.overwrite = [name for name in MOVED_ON_OVERWRITE if (d / name).exists()]
    return folder


def stopped_message(run_dir: Path, command: str) -> str:
    """What an interrupted run says: where it stands and how to continue it (``command --resume RUN_DIR``)."""
    last = latest_checkpoint(run_dir / "checkpoints")
    if last is None and not (run_dir / "config.json").exists():
        return f"interrupted before {run_dir} held a run: nothing to resume"
    kept = f"its last checkpoint is {last.name}" if last is not None else "it has no checkpoint yet"
    return f"interrupted: {run_dir} keeps the run ({kept}); continue it with: {command} --resume {run_dir}"


@contextlib.contextmanager
def owned_run(run_dir: Path, *, device: str, what: str, command: str, log: Log) -> Iterator[Log]:
    """One run in this process, or as one rank of a ``torchrun`` job, owning ``run_dir``.

    Joins the process group when launched by ``torchrun`` (and leaves it after); rank 0 holds the folder's lock
    from start to end (``what`` names the owner in messages) and, on Ctrl-C or SIGTERM through the CLI, says
    where the run stands (:func:`stopped_message` with ``command``). Yields the log to use: ``log`` on rank 0,
    silent on the other ranks."""
    from csrl.train import distributed as dist

    owns_group = dist.init_from_env(device)
    lock = None
    quiet: Log = log if dist.is_main_process() else (lambda msg: None)
    try:
        if dist.is_main_process():
            lock = acquire_lock(run_dir, what=what, log=quiet)
        yield quiet
    except KeyboardInterrupt:
        if lock is not None:
            quiet(stopped_message(run_dir, command))
        raise
    finally:
        if lock is not None:
            lock.release()
        if owns_group:
            dist.shutdown()
