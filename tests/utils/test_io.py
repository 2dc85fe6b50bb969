from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from csrl.utils.io import atomic_dir, atomic_write_bytes, atomic_write_json, atomic_write_text, strict_json


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
