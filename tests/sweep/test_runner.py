from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_files import write_sweep

from csrl.errors import CsrlError
from csrl.report.sweep import collect, write_summary
from csrl.report.sweep_layout import DONE, cell_state
from csrl.sweep.grid import SweepSettings, load_sweep
from csrl.sweep.runner import prepare_cell, run_cell, run_sweep
from csrl.train.callbacks import StepInfo
from csrl.train.loop import train
from csrl.train.run_lock import LOCK_FILE, acquire_lock, read_holder


# ----------------------------------------------------------------------------- running
def _tiny_sweep(tmp_path: Path, model: Path, corpus: Path, **settings: Any):  # type: ignore[no-untyped-def]
    base = {
        "model": {"model": str(model), "pooler": "cls"},
        "data": {"train_files": [str(corpus)], "max_length": 16},
        "train": {
            "batch_size": 8,
            "max_steps": 3,
            "eval_every": 0,
            "checkpoint_every": 2,
            "lr": 1e-3,
            "progress": False,
            "final_eval": True,
        },  # fmt: skip
    }
    sweep_settings = {"final_tasks": "stsb", "max_retries": 1, **settings}
    return load_sweep(write_sweep(tmp_path / "s.yaml", {"train.seed": [1, 2]}, base=base, sweep=sweep_settings))


class _Crash(Exception):
    pass


def test_sweep_skips_finished_and_resumes_killed_cells(
    tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path
) -> None:
    corpus = fake_data_dir / "train" / "wiki" / "wiki1m_for_simcse.head.txt"
    sweep = _tiny_sweep(tmp_path, tiny_model_dir, corpus)
    a, b = sweep.cells
    assert not b.config.train.final_eval  # final_tasks: stsb turns the trainer's 7-task table off
    # a: finished earlier
    prepare_cell(a)
    (a.dir / DONE).write_text("{}")
    # b: killed mid-way, after the step-2 checkpoint (its metrics log ends in a cut line)
    prepare_cell(b)

    def crash(info: StepInfo) -> None:
        if info.step == 3:
            raise _Crash

    with pytest.raises(_Crash):
        train(b.config, data_dir=fake_data_dir, callbacks=[crash])
    with (b.dir / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 3, "train/lo')
    assert cell_state(b.dir) == "partial"
    logs: list[str] = []
    status = run_sweep(sweep, data_dir=fake_data_dir, threads=2, log=logs.append)
    assert status == {a.name: "skipped", b.name: "done"}, logs
    assert not (a.dir / "train.log").exists()
    assert "resumed from" in (b.dir / "train.log").read_text()
    steps = [json.loads(x)["step"] for x in (b.dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert cell_state(b.dir) == "done" and not (b.dir / "checkpoints").exists()  # pruned once done
    assert "STS-B" in json.loads((b.dir / "results" / "sts_stsb.json").read_text())["reported"]
    assert yaml.safe_load((b.dir / "cell.yaml").read_text())["train"]["seed"] == 2
    # a second run has nothing to do (a python that always fails proves that no cell runs)
    assert set(run_sweep(sweep, python=["/bin/false"], log=logs.append).values()) == {"skipped"}
    col = collect(sweep.output_dir)
    assert [x.state for x in col.cells] == ["done", "done"] and col.cells[1].sts.keys() == {"STS-B"}
    assert (sweep.output_dir / "summary" / "results.md") in write_summary(sweep.output_dir)


def test_crashes_are_retried_user_errors_are_not(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {"train.seed": [1]}, sweep={"final_tasks": "none"}))
    cell = sweep.cells[0]
    script = tmp_path / "fail"
    script.write_text("#!/bin/sh\nexit $CODE\n")
    script.chmod(0o755)
    for code, retries, n in ((2, 3, 1), (3, 3, 1), (1, 2, 3), (-9, 1, 2)):
        (cell.dir / "cell.json").unlink(missing_ok=True)
        cmd = ["env", f"CODE={code}", str(script)] if code >= 0 else ["sh", "-c", "kill -9 $$", "sh"]
        st = run_cell(cell, SweepSettings(max_retries=retries), python=cmd, log=lambda s: None)
        attempts = json.loads((cell.dir / "cell.json").read_text())["attempts"]
        assert st == "failed" and [x["exit_code"] for x in attempts] == [code] * n
    # a crash, then success on the retry
    mark = tmp_path / "crashed-once"
    flaky = tmp_path / "flaky"
    flaky.write_text(f'#!/bin/sh\nif [ ! -e "{mark}" ]; then touch "{mark}"; exit 1; fi\nexit 0\n')
    flaky.chmod(0o755)
    (cell.dir / "cell.json").unlink()
    assert run_cell(cell, SweepSettings(max_retries=1), python=[str(flaky)], log=lambda s: None) == "done"
    attempts = json.loads((cell.dir / "cell.json").read_text())["attempts"]
    assert [x["exit_code"] for x in attempts] == [1, 0] and cell_state(cell.dir) == "done"
    assert run_cell(cell, SweepSettings(), python=["/bin/false"]) == "skipped"
    # a cell folder started with another config is refused, not mixed
    other = load_sweep(write_sweep(tmp_path / "s.yaml", {"train.seed": [1]}, sweep={"final_tasks": "none"},
                                   base={"train": {"batch_size": 16, "max_steps": 3}}))  # fmt: skip
    with pytest.raises(CsrlError, match=r"another config \(changed: train.batch_size"):
        prepare_cell(other.cells[0])
    # a setting csrl gained after the cell started (absent from its stored config, at its default now) is not a change
    meta = json.loads((cell.dir / "cell.json").read_text())
    del meta["config"]["train"]["diffcse_weight"]
    (cell.dir / "cell.json").write_text(json.dumps(meta))
    prepare_cell(cell)
    meta["config"]["train"]["mlm_weight"] = 0.5  # a stored value other than the default still is
    (cell.dir / "cell.json").write_text(json.dumps(meta))
    with pytest.raises(CsrlError, match=r"another config \(changed: train.mlm_weight\)"):
        prepare_cell(cell)


# ----------------------------------------------------------------------------- locks and orphans
def test_a_sweep_folder_takes_one_sweep_at_a_time(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {"train.seed": [1]}, sweep={"final_tasks": "none"}))
    with (
        acquire_lock(sweep.output_dir, command="csrl sweep first.yaml"),
        pytest.raises(CsrlError, match=r"is in use by another sweep: pid \d+ .*\(csrl sweep first.yaml\)"),
    ):
        run_sweep(sweep, python=["/bin/false"], log=lambda s: None)
    assert not (sweep.cells[0].dir / "cell.json").exists()  # nothing was started


def test_a_cell_still_trained_by_a_live_process_is_named_not_run(tmp_path: Path) -> None:
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {"train.seed": [1]}, sweep={"final_tasks": "none"}))
    cell = sweep.cells[0]
    code = (f"from csrl.train.run_lock import acquire_lock\nimport time\nacquire_lock({str(cell.dir)!r}, "
            "command='csrl train orphan')\nprint('locked', flush=True)\ntime.sleep(120)\n")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        logs: list[str] = []
        assert run_cell(cell, SweepSettings(), python=["/bin/false"], log=logs.append) == "failed"
        assert any(f"still being trained by pid {holder.pid}" in m and "csrl train orphan" in m for m in logs), logs
    finally:
        holder.kill()
        holder.wait()
    assert run_cell(cell, SweepSettings(max_retries=0), python=["/bin/true"], log=lambda s: None) == "done"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_killed_sweep_takes_its_training_child_with_it(
    tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path
) -> None:
    corpus = fake_data_dir / "train" / "wiki" / "wiki1m_for_simcse.head.txt"
    base = {"model": {"model": str(tiny_model_dir), "pooler": "cls"},
            "data": {"train_files": [str(corpus)], "max_length": 16},
            "train": {"batch_size": 8, "max_steps": 30, "eval_every": 0, "checkpoint_every": 5, "lr": 1e-3,
                      "progress": False, "precision": "fp32"}}  # fmt: skip
    path = write_sweep(tmp_path / "s.yaml", {"train.seed": [1]}, base=base, sweep={"final_tasks": "none"})
    cell = load_sweep(path).cells[0]
    argv = [sys.executable, "-m", "csrl", "sweep", str(path), "--data-dir", str(fake_data_dir), "--threads", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    sweep = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    child, deadline = None, time.time() + 120
    while time.time() < deadline and sweep.poll() is None:
        holder = read_holder(cell.dir)
        if holder is not None and holder.pid != sweep.pid and (cell.dir / "metrics.jsonl").exists():
            child = holder.pid
            break
        time.sleep(0.02)
    assert child is not None, "the cell never started training"
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    deadline = time.time() + 15
    while time.time() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), f"training child {child} outlived its killed sweep"
    assert "csrl: terminated (SIGTERM)" in (cell.dir / "train.log").read_text()  # the death signal, not the end
    assert not (cell.dir / LOCK_FILE).exists()  # the child unwound and released its lock
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"taking over the stale lock of pid {sweep.pid}" in again.stdout  # the sweep's own lock
    assert cell_state(cell.dir) == "done"
    steps = [json.loads(x)["step"] for x in (cell.dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 31))


def test_an_interrupted_sweep_stops_every_running_cell(tmp_path: Path) -> None:
    """SIGTERM to a sweep running 2 cells at a time: both children are stopped, the third never starts."""
    path = write_sweep(tmp_path / "s.yaml", {"train.seed": [1, 2, 3]}, sweep={"final_tasks": "none"})
    pids = tmp_path / "pids"
    pids.mkdir()
    child = tmp_path / "child.sh"
    child.write_text(f'#!/bin/sh\necho $$ > "{pids}/$$"\nexec sleep 60\n')
    code = (
        "import signal, sys\n"
        "from csrl.cli.main import Terminated\n"
        "def on_term(*args): raise Terminated\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "from csrl.sweep import load_sweep, run_sweep\n"
        "try:\n"
        f"    run_sweep(load_sweep({str(path)!r}), python=['sh', {str(child)!r}], jobs=2, log=print)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(143)\n"
    )
    sweep = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(pids.iterdir())) < 2 and sweep.poll() is None:
        time.sleep(0.02)
    started = [int(p.name) for p in pids.iterdir()]
    assert len(started) == 2, sweep.communicate()[0]
    sweep.send_signal(signal.SIGTERM)
    out = sweep.communicate(timeout=30)[0].decode()
    assert sweep.returncode == 143, out
    assert not any(_alive(pid) for pid in started), out
    assert sorted(p.name for p in pids.iterdir()) == sorted(map(str, started))  # no third cell, no retry
    assert not (tmp_path / "out" / LOCK_FILE).exists()


def test_an_interrupted_attempt_keeps_its_seconds_in_the_cell_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt cut by Ctrl-C/SIGTERM in this process is still recorded (exit code null, its seconds); the cell's
    DONE seconds are the sum over every attempt, those of the interrupted sweep included."""
    import csrl.sweep.runner as runner

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {"train.seed": [1]}, sweep={"final_tasks": "none"}))
    cell = sweep.cells[0]
    calls: list[int] = []

    def attempt(*args: Any) -> int:
        calls.append(1)
        time.sleep(0.2)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return 0

    monkeypatch.setattr(runner, "_attempt", attempt)
    with pytest.raises(KeyboardInterrupt):
        run_cell(cell, SweepSettings(), log=lambda s: None)
    attempts = json.loads((cell.dir / "cell.json").read_text())["attempts"]
    assert [a["exit_code"] for a in attempts] == [None] and attempts[0]["seconds"] >= 0.2
    assert run_cell(cell, SweepSettings(), log=lambda s: None) == "done"
    attempts = json.loads((cell.dir / "cell.json").read_text())["attempts"]
    assert [a["exit_code"] for a in attempts] == [None, 0]
    done = json.loads((cell.dir / DONE).read_text())["seconds"]
    assert done >= sum(a["seconds"] for a in attempts) >= 0.4
