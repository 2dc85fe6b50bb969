"""A run owns its folder: the lock (exclusive, named, released, stale locks taken over), the refusal of a
folder holding another run, --overwrite, and SIGTERM/SIGINT unwinding."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csrl.errors import CsrlError
from csrl.train import checkpoint as ckpt
from csrl.train.callbacks import StepInfo
from csrl.train.config import load_config
from csrl.train.loop import train
from csrl.train.run_lock import LOCK_FILE, acquire_lock, live_holder, owned_run, read_holder


def _cfg(model: Path, corpus: Path, out: Path | str, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(None, [f"model.model={model}", f"data.train_files=[{corpus}]", f"output_dir={out}",
                              "train.batch_size=8", "train.max_steps=2", "train.eval_every=0", "train.checkpoint_every=1",
                              "train.final_eval=false", "train.progress=false", "train.lr=1e-3",
                              "train.precision=fp32", *extra])  # fmt: skip


def _write_lock(folder: Path, **fields: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rec = {"pid": 999_999_999, "host": socket.gethostname(), "started": time.time() - 60, "command": "csrl train x"}
    (folder / LOCK_FILE).write_text(json.dumps({**rec, **fields}))
    return folder / LOCK_FILE


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------------------- the lock itself
def test_the_lock_is_exclusive_names_its_holder_and_goes_away(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "run"
    lock = acquire_lock(folder, command="csrl train recipe.yaml")
    holder = read_holder(folder)
    assert holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname()
    assert holder.command == "csrl train recipe.yaml" and abs(holder.started - time.time()) < 60
    assert live_holder(folder) == holder
    with pytest.raises(CsrlError) as err:  # a second holder, even in the same process, is refused
        acquire_lock(folder, what="sweep")
    msg = err.value.message
    assert f"{folder} is in use by another sweep: pid {os.getpid()} on {socket.gethostname()} since " in msg
    assert msg.endswith("(csrl train recipe.yaml)") and str(folder / LOCK_FILE) in (err.value.hint or "")
    lock.release()
    lock.release()  # idempotent
    assert not (folder / LOCK_FILE).exists() and live_holder(folder) is None
    assert not (tmp_path / "new").exists()  # the folders the lock created, left empty, are removed
    with acquire_lock(folder):
        (folder / "kept.txt").write_text("x")
    assert (folder / "kept.txt").exists() and not (folder / LOCK_FILE).exists()


def test_a_live_process_holds_it_until_killed_then_it_is_taken_over(tmp_path: Path) -> None:
    code = (f"from csrl.train.run_lock import acquire_lock\nimport time\nacquire_lock({str(tmp_path)!r}, "
            "command='holder-cmd')\nprint('locked', flush=True)\ntime.sleep(120)\n")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(CsrlError, match=rf"in use by another run: pid {proc.pid} on .*\(holder-cmd\)"):
            acquire_lock(tmp_path)
        assert (h := live_holder(tmp_path)) is not None and h.pid == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    logs: list[str] = []
    with acquire_lock(tmp_path, log=logs.append):  # the kernel dropped the dead process's flock
        assert read_holder(tmp_path).pid == os.getpid()  # type: ignore[union-attr]
    assert len(logs) == 1 and f"taking over the stale lock of pid {proc.pid}" in logs[0], logs
    assert "(holder-cmd)" in logs[0] and "its process is gone" in logs[0]


@pytest.mark.parametrize(
    "fields,reason",
    [({"pid": None}, "its process is gone"), ({"pid": 1}, "its process no longer holds it")],
    ids=["dead pid", "pid alive without the flock"],
)
def test_a_stale_lock_file_is_taken_over(tmp_path: Path, fields: dict[str, object], reason: str) -> None:
    _write_lock(tmp_path, **{k: (v if v is not None else _dead_pid()) for k, v in fields.items()})
    assert live_holder(tmp_path) is None
    logs: list[str] = []
    with acquire_lock(tmp_path, log=logs.append):
        pass
    assert len(logs) == 1 and "taking over the stale lock" in logs[0] and reason in logs[0], logs


def test_a_lock_from_another_host_is_not_guessed_at(tmp_path: Path) -> None:
    path = _write_lock(tmp_path, host="other-node-17")
    with pytest.raises(CsrlError, match="other-node-17 .*another host") as err:
        acquire_lock(tmp_path)
    assert f"delete {path}" in (err.value.hint or "")


def test_an_empty_lock_file_is_waited_for_when_young_and_taken_when_old(tmp_path: Path) -> None:
    path = tmp_path / LOCK_FILE
    path.write_text("")
    old = time.time() - 3600
    os.utime(path, (old, old))
    logs: list[str] = []
    with acquire_lock(tmp_path, log=logs.append):
        pass
    assert "empty or unreadable" in logs[0]


# ----------------------------------------------------------------------------- runs and their folders
def test_a_run_is_refused_while_another_holds_its_folder(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with acquire_lock(run, command="the other run"), pytest.raises(CsrlError, match=r"in use by .*the other run"):
        train(_cfg(tiny_model_dir, tiny_corpus, run))
    assert sorted(p.name for p in run.iterdir()) == []  # nothing written by the refused run


def test_an_empty_output_dir_is_refused(tiny_model_dir: Path, tiny_corpus: Path) -> None:
    with pytest.raises(CsrlError, match="output_dir.* is empty"):
        train(_cfg(tiny_model_dir, tiny_corpus, ""))


def test_bad_input_leaves_no_folder_behind(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="not found"):
        train(_cfg(tiny_model_dir, tmp_path / "missing.txt", tmp_path / "a" / "run"))
    assert not (tmp_path / "a").exists()


def test_a_new_run_never_mixes_with_an_old_one(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_corpus, run, "train.max_steps=3"))
    before = {p.name: (p / "model.safetensors").read_bytes() for p in ckpt.list_checkpoints(run / "checkpoints")}
    config = (run / "config.json").read_text()
    with pytest.raises(CsrlError, match=r"already holds a run \(config.json, metrics.jsonl, checkpoints, best") as err:
        train(_cfg(tiny_model_dir, tiny_corpus, run, "train.seed=7"))
    assert "--resume" in (err.value.hint or "") and "--overwrite" in (err.value.hint or "")
    assert (run / "config.json").read_text() == config  # never silently overwritten
    assert {
        p.name: (p / "model.safetensors").read_bytes() for p in ckpt.list_checkpoints(run / "checkpoints")
    } == before
    with pytest.raises(CsrlError, match="contradict"):
        train(_cfg(tiny_model_dir, tiny_corpus, run), resume=True, overwrite=True)

    logs: list[str] = []
    res = train(_cfg(tiny_model_dir, tiny_corpus, run, "train.seed=7"), overwrite=True, log=logs.append)
    assert res.steps == 2 and json.loads((run / "config.json").read_text())["train"]["seed"] == 7
    [aside] = (run / "overwritten").iterdir()
    assert any(f"were moved to {aside}" in m for m in logs), logs
    assert {
        p.name: (p / "model.safetensors").read_bytes() for p in ckpt.list_checkpoints(aside / "checkpoints")
    } == before
    assert (aside / "config.json").read_text() == config
    # the new run's checkpoints are its own: pruning kept the last two of steps 1-2, none of the old steps
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step-0000001", "step-0000002"]
    assert not (run / LOCK_FILE).exists()


class _Stop(KeyboardInterrupt):
    pass


def test_an_interrupted_run_releases_its_lock_and_says_how_to_resume(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"

    def stop(info: StepInfo) -> None:
        if info.step == 2:
            raise _Stop

    logs: list[str] = []
    with pytest.raises(_Stop):
        train(_cfg(tiny_model_dir, tiny_corpus, run, "train.max_steps=5"), callbacks=[stop], log=logs.append)
    assert f"interrupted: {run} keeps the run (its last checkpoint is step-0000001); continue it with: " \
           f"csrl train --resume {run}" in logs  # fmt: skip
    assert not (run / LOCK_FILE).exists()
    assert train(_cfg(tiny_model_dir, tiny_corpus, run, "train.max_steps=5"), resume=True).steps == 5


def _cli_train(model: Path, corpus: Path, out: Path, steps: int) -> list[str]:
    argv = [sys.executable, "-m", "csrl", "train", "configs/quickstart-cpu.yaml", "--output-dir", str(out),
            "--threads", "1", "--no-before"]  # fmt: skip
    sets = {"model.model": model, "data.train_files": f"[{corpus}]", "train.batch_size": 8, "train.max_steps": steps,
            "train.eval_every": 0, "train.checkpoint_every": 2, "train.final_eval": "false",
            "train.progress": "false", "train.precision": "fp32"}  # fmt: skip
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def _steps_logged(run: Path) -> int:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return max((json.loads(x)["step"] for x in lines if x.endswith("}")), default=0)


@pytest.mark.parametrize("sig,code,said", [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130,
                                           "interrupted")], ids=["SIGTERM", "SIGINT"])  # fmt: skip
def test_a_signal_stops_the_run_cleanly(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, sig: signal.Signals, code: int, said: str
) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(_cli_train(tiny_model_dir, tiny_corpus, run, 5000), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and _steps_logged(run) < 3:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert f"csrl: {said}" in err and "Traceback" not in err, err[-2000:]
    assert f"interrupted: {run} keeps the run (its last checkpoint is step-" in out
    assert f"continue it with: csrl train --resume {run}" in out
    assert not (run / LOCK_FILE).exists()
    last = ckpt.resume_checkpoint(run / "checkpoints", log=print)
    assert last is not None and ckpt.checkpoint_problem(last) is None
    assert not list((run / "checkpoints").glob(".*"))  # no temporary left by the interruption


def test_owned_run_holds_the_lock_and_on_interrupt_names_its_own_command(tmp_path: Path) -> None:
    """The one wrapper of ``csrl train`` and ``csrl pretrain``: the lock is held inside, released after; an interrupt
    says how to resume with the caller's command and is re-raised."""
    run = tmp_path / "pre"
    (run / "checkpoints" / "step-0000004").mkdir(parents=True)
    (run / "checkpoints" / "step-0000004" / "trainer_state.json").write_text("{}")  # what makes it look complete
    (run / "config.json").write_text("{}")
    logs: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with owned_run(run, device="cpu", what="pretraining run", command="csrl pretrain", log=logs.append) as log:
            log("inside")  # a single process is rank 0: it logs
            assert live_holder(run) is not None
            raise KeyboardInterrupt
    assert logs[0] == "inside" and logs[-1] == (
        f"interrupted: {run} keeps the run (its last checkpoint is step-0000004); continue it with: "
        f"csrl pretrain --resume {run}"
    )
    assert not (run / LOCK_FILE).exists()
    with owned_run(run, device="cpu", what="run", command="csrl train", log=logs.append):
        pass
    assert not (run / LOCK_FILE).exists() and len(logs) == 2
