from __future__ import annotations

import json
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
