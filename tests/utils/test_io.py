from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from csrl.errors import CsrlError
from csrl.utils.io import (
    DiskFullError,
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    strict_json,
)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_write_text_bytes_json(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "héllo\r\nworld\n")
    assert (tmp_path / "a.txt").read_bytes() == "héllo\r\nworld\n".encode()
    atomic_write_bytes(tmp_path / "sub" / "b.bin", b"\x00\x01")
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2.5, "é"]})
    text = (tmp_path / "c.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"x": [1, 2.5, "é"]} and text.endswith("\n") and "é" in text
    assert _leftovers(tmp_path) == []


def test_permissions_follow_umask_and_existing_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644  # not tempfile's 0o600
        (tmp_path / "exec.sh").write_text("old")
        os.chmod(tmp_path / "exec.sh", 0o750)
        atomic_write_text(tmp_path / "exec.sh", "new")
        assert stat.S_IMODE((tmp_path / "exec.sh").stat().st_mode) == 0o750
    finally:
        os.umask(old)


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_failure_mid_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str) -> None:
    target = tmp_path / "state.json"
    atomic_write_json(target, {"step": 1})

    def boom(*args: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_json(target, {"step": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"step": 1}
    assert _leftovers(tmp_path) == []


def test_unserialisable_json_touches_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    atomic_write_json(target, [1])
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == [1]
    assert _leftovers(tmp_path) == []


def test_hard_crash_mid_write_leaves_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"old content")
    # The child dies (no cleanup, like SIGKILL) after writing most of the temporary, before the rename.
    code = (
        "import os, sys\n"
        "from csrl.utils import io\n"
        "def die(fd): os._exit(17)\n"
        "io.os.fsync = die\n"
        f"io.atomic_write_bytes({str(target)!r}, b'new' * 100000)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == 17, proc.stderr
    assert target.read_bytes() == b"old content"
    # only a hidden, recognisable temporary may remain after a hard crash
    assert all(n.startswith(".ckpt.bin.") and n.endswith(".tmp") for n in _leftovers(tmp_path))


def test_atomic_dir_creates_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and not target.exists()
        (tmp / "a.txt").write_text("1")
        (tmp / "nested").mkdir()
        (tmp / "nested" / "b.txt").write_text("2")
    assert (target / "a.txt").read_text() == "1" and (target / "nested" / "b.txt").read_text() == "2"
    with atomic_dir(target) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert _leftovers(tmp_path) == []


def test_atomic_dir_error_in_block_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "partial.txt").write_text("half")
        raise RuntimeError("crash while saving")
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert _leftovers(tmp_path) == []


def test_atomic_dir_restores_old_when_final_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "keep.txt").write_text("old")
    real_rename = os.rename
    calls: list[tuple[str, str]] = []

    def flaky_rename(src: str, dst: str) -> None:
        calls.append((str(src), str(dst)))
        if len(calls) == 2:  # the new directory's rename onto the target
            raise OSError("rename failed")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(OSError, match="rename failed"), atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert (target / "keep.txt").read_text() == "old" and not (target / "new.txt").exists()
    assert _leftovers(tmp_path) == []


def test_strict_json_makes_non_finite_and_numpy_values_strict() -> None:
    nan, inf = float("nan"), float("inf")
    obj = {
        "finite": 1.5,
        "nan": nan,
        "inf": [inf, -inf, 2],
        "tuple": (np.float32(0.5), np.int64(3), np.float64(-inf), np.bool_(True)),
        "array": np.array([[1.0, np.nan]]),
        "nested": {"deeper": {"x": np.float16(nan), "s": "text", "none": None}},
    }
    got = strict_json(obj)
    assert got == {
        "finite": 1.5,
        "nan": None,
        "inf": [None, None, 2],
        "tuple": [0.5, 3, None, True],
        "array": [[1.0, None]],
        "nested": {"deeper": {"x": None, "s": "text", "none": None}},
    }
    assert type(got["tuple"][1]) is int and type(got["tuple"][0]) is float and type(got["tuple"][3]) is bool
    json.dumps(got, allow_nan=False)  # strict JSON: would raise ValueError on a NaN left behind
    assert obj["nan"] != obj["nan"] and isinstance(obj["tuple"], tuple)  # the input is not changed


def _enospc(*args: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_in_a_file_write_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "config.json"
    atomic_write_json(target, {"step": 1})
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(DiskFullError) as err:
        atomic_write_bytes(target, b"x" * 3_000_000)
    monkeypatch.undo()
    free_mb = shutil.disk_usage(tmp_path).free / 1e6
    msg = err.value.message
    assert msg.startswith(f"no space left on {target}: needed about 3.0 MB, ") and msg.endswith("MB free"), msg
    assert abs(float(msg.split(", ")[-1].split()[0]) - free_mb) < max(0.05 * free_mb, 50)  # the real free space
    assert isinstance(err.value, CsrlError) and err.value.exit_code == 2 and err.value.hint
    assert json.loads(target.read_text()) == {"step": 1}
    assert _leftovers(tmp_path) == []


def test_quota_exceeded_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def quota(*args: object) -> None:
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(os, "replace", quota)
    with pytest.raises(DiskFullError, match="quota exceeded on"):
        atomic_write_text(tmp_path / "a.txt", "x")
    monkeypatch.undo()
    assert _leftovers(tmp_path) == [] and not (tmp_path / "a.txt").exists()


def test_other_os_errors_stay_what_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def eio(*args: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(OSError, match="I/O error") as err:
        atomic_write_text(tmp_path / "a.txt", "x")
    assert not isinstance(err.value, CsrlError)


def test_full_disk_in_a_directory_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_dir(target) as tmp:
        (tmp / "keep.txt").write_text("old")
    with pytest.raises(DiskFullError) as err, atomic_dir(target, expected_bytes=5_000_000) as tmp:
        (tmp / "part.bin").write_bytes(b"x" * 1000)
        _enospc()
    assert err.value.message.startswith(f"no space left on {target}: needed about 5.0 MB")
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert _leftovers(tmp_path) == []
    with pytest.raises(DiskFullError, match=r"needed more than 0.0 MB"), atomic_dir(tmp_path / "new"):
        _enospc()  # without a size hint, only what was written is known
    assert not (tmp_path / "new").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("after", [1, 2], ids=["between the renames", "after both"])
def test_atomic_dir_interrupted_during_the_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """A signal raised as an exception right after a rename: the target is the old or the new, never absent."""
    target = tmp_path / "best"
    target.mkdir()
    (target / "v.txt").write_text("old")
    real_rename = os.rename
    calls = []

    def rename_then_signal(src: str, dst: str) -> None:
        real_rename(src, dst)
        calls.append(dst)
        if len(calls) == after:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", rename_then_signal)
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "v.txt").write_text("new")
    monkeypatch.undo()
    assert (target / "v.txt").read_text() == ("old" if after == 1 else "new")
    assert _leftovers(tmp_path) == []
