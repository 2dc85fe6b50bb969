"""Checkpoints: a manifest written last and verified on load; resume falls back past damage; a full disk
keeps the previous checkpoint."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from csrl.errors import CsrlError
from csrl.train import checkpoint as ckpt
from csrl.utils.io import DiskFullError


def _model(seed: int = 0, width: int = 16) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(3, width)).sum().backward()
    opt.step()  # the optimizer has state (exp_avg, exp_avg_sq) to save
    return model, opt


def _save(root: Path, step: int, model: nn.Module, opt: torch.optim.Optimizer, keep: int = 10) -> Path:
    return ckpt.save_checkpoint(root, step, model=model, optimizer=opt, scaler_state=None,
                                trainer_state={"step": step, "epoch": 0, "position": step}, keep=keep)  # fmt: skip


def _three(tmp_path: Path) -> tuple[Path, list[Path]]:
    root = tmp_path / "checkpoints"
    model, opt = _model()
    paths = []
    for step in (2, 4, 6):
        with torch.no_grad():
            next(model.parameters()).add_(1.0)  # each checkpoint holds different weights
        paths.append(_save(root, step, model, opt))
    return root, paths


def test_manifest_lists_every_file_and_load_round_trips(tmp_path: Path) -> None:
    model, opt = _model()
    path = _save(tmp_path / "checkpoints", 7, model, opt)
    manifest = json.loads((path / ckpt.MANIFEST).read_text())
    assert set(manifest["files"]) == {"model.safetensors", "state.pt", "trainer_state.json"}
    for name, entry in manifest["files"].items():
        assert (path / name).stat().st_size == entry["bytes"] and len(entry["sha256"]) == 64
    assert ckpt.checkpoint_problem(path) is None
    fresh, fresh_opt = _model(seed=1)
    saved = ckpt.load_checkpoint(path, fresh, fresh_opt)
    assert saved["trainer"]["step"] == 7
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fresh_opt.state_dict()["state"][0]["exp_avg"].equal(opt.state_dict()["state"][0]["exp_avg"])
    assert not list((tmp_path / "checkpoints").glob(".*"))


def _truncate(p: Path) -> None:
    f = p / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_byte(p: Path) -> None:
    f = p / "state.pt"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated weights": (_truncate, "model.safetensors has"),
    "flipped byte": (_flip_byte, "state.pt does not match its sha256"),
    "no manifest": (lambda p: (p / ckpt.MANIFEST).unlink(), "no manifest.json"),
    "manifest not JSON": (lambda p: (p / ckpt.MANIFEST).write_text('{"files": '), "unreadable"),
    "file missing": (lambda p: (p / "state.pt").unlink(), "state.pt is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damage_is_caught_and_resume_falls_back(tmp_path: Path, damage: str) -> None:
    root, (c2, c4, c6) = _three(tmp_path)
    harm, reason = DAMAGE[damage]
    harm(c6)
    assert reason in (ckpt.checkpoint_problem(c6) or "")
    model, opt = _model()
    if damage != "no manifest":  # alone, a checkpoint without manifest may be an old one: resume decides
        with pytest.raises(CsrlError, match="is damaged"):
            ckpt.load_checkpoint(c6, model, opt)
    logs: list[str] = []
    assert ckpt.resume_checkpoint(root, log=logs.append) == c4
    assert any("step-0000006 is damaged" in m and reason in m for m in logs), logs
    assert any("resuming from step-0000004" in m for m in logs), logs
    # the damaged one is kept aside (not deleted), out of the way of pruning and of the next resume
    assert (root / "damaged-step-0000006").is_dir() and not c6.exists()
    assert ckpt.list_checkpoints(root) == [c2, c4]
    assert ckpt.load_checkpoint(c4, model, opt)["trainer"]["step"] == 4


def test_every_checkpoint_damaged_is_refused(tmp_path: Path) -> None:
    root, paths = _three(tmp_path)
    for p in paths:
        _flip_byte(p)
    with pytest.raises(CsrlError, match="every checkpoint in .* is damaged") as err:
        ckpt.resume_checkpoint(root, log=lambda m: None)
    assert "--overwrite" in (err.value.hint or "")


def test_checkpoints_from_before_manifests_load_with_a_note(tmp_path: Path) -> None:
    root, paths = _three(tmp_path)
    for p in paths:
        (p / ckpt.MANIFEST).unlink()  # a run written by an older csrl
    logs: list[str] = []
    assert ckpt.resume_checkpoint(root, log=logs.append) == paths[-1]
    assert any("no manifest.json" in m and "unverified" in m for m in logs), logs
    model, opt = _model()
    assert ckpt.load_checkpoint(paths[-1], model, opt)["trainer"]["step"] == 6
    _truncate(paths[-1])  # unverifiable and broken: a clear error, not a traceback from safetensors
    with pytest.raises(CsrlError, match="cannot be read") as err:
        ckpt.load_checkpoint(paths[-1], model, opt)
    assert "damaged-step-0000006" in (err.value.hint or "")


def test_disk_full_mid_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "checkpoints"
    model, opt = _model()
    first = _save(root, 2, model, opt, keep=1)
    real = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.name == "state.pt":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFullError) as err:
        _save(root, 4, model, opt, keep=1)
    monkeypatch.undo()
    msg = err.value.message
    assert msg.startswith(f"no space left on {root / 'step-0000004'}: needed about") and "MB free" in msg, msg
    assert "step 4" in msg and str(first) in (err.value.hint or "") and "--resume" in (err.value.hint or "")
    assert ckpt.list_checkpoints(root) == [first] and ckpt.checkpoint_problem(first) is None  # not pruned
    assert sorted(p.name for p in root.iterdir()) == ["step-0000002"]  # no temporary left


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs at ``path``; the reason it cannot be done, or None."""
    if shutil.which("mount") is None:
        return "no mount command"
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode != 0:
        return f"mount -t tmpfs failed (needs root and CAP_SYS_ADMIN): {proc.stderr.strip()[:200]}"
    return None


def _unmount(path: Path) -> None:
    # lazily: a file the failed run left open (its metrics log, a tracker) must not keep the mount alive
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_real_full_disk_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A 2 MB tmpfs: the first checkpoint fits, then the disk is filled; the second fails cleanly."""
    disk = tmp_path / "disk"
    why = _mount_tmpfs(disk, "2m")
    if why is not None:
        pytest.skip(f"real full-disk test skipped: {why} (the monkeypatched ENOSPC test above always runs)")
    try:
        root = disk / "checkpoints"
        model, opt = _model(width=160)  # about 0.3 MB of weights and 0.6 MB of optimizer state
        first = _save(root, 2, model, opt, keep=1)
        size = sum(f.stat().st_size for f in first.iterdir())
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * max(free - size // 2, 0))  # room for half a checkpoint
        with pytest.raises(
            DiskFullError, match=r"no space left on .*step-0000004: needed about [\d.]+ MB, [\d.]+ MB free"
        ):
            _save(root, 4, model, opt, keep=1)
        assert ckpt.list_checkpoints(root) == [first] and ckpt.checkpoint_problem(first) is None
        assert sorted(p.name for p in root.iterdir()) == ["step-0000002"]
        (disk / "filler").unlink()
        assert _save(root, 4, model, opt, keep=1).name == "step-0000004"  # space again: saves, then prunes
        assert [p.name for p in ckpt.list_checkpoints(root)] == ["step-0000004"]
    finally:
        _unmount(disk)


def test_a_run_on_a_full_disk_stops_cleanly_and_resumes(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run folder on a 20 MB tmpfs: the step-1 checkpoint (about 12 MB) fits, step 2's does not."""
    from csrl.cli.main import main

    disk = tmp_path / "disk"
    why = _mount_tmpfs(disk, "20m")
    if why is not None:
        pytest.skip(f"real full-disk run skipped: {why} (the monkeypatched ENOSPC tests always run)")
    run = disk / "run"
    argv = ["train", "configs/quickstart-cpu.yaml", "--no-before", "--output-dir", str(run)]
    for s in (f"model.model={tiny_model_dir}", f"data.train_files=[{tiny_corpus}]", "train.batch_size=8",
              "train.max_steps=3", "train.eval_every=0", "train.checkpoint_every=1", "train.keep_checkpoints=1",
              "train.final_eval=false", "train.progress=false", "train.precision=fp32"):  # fmt: skip
        argv += ["--set", s]
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"csrl: error: no space left on {run / 'checkpoints' / 'step-0000002'}: needed about " in err, err
        assert "Traceback" not in err and f"previous checkpoint {run / 'checkpoints' / 'step-0000001'} is intact" in err
        [kept] = ckpt.list_checkpoints(run / "checkpoints")
        assert kept.name == "step-0000001" and ckpt.checkpoint_problem(kept) is None
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000001"]
        assert not (run / ".lock").exists()
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
        assert main(["train", "--resume", str(run)]) == 0, capsys.readouterr().err
        assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-0000003"]
    finally:
        _unmount(disk)
