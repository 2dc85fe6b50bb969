from __future__ import annotations

import argparse
import ast
import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from csrl.cli.report_cmds import add_parsers
from csrl.errors import CsrlError
from csrl.report.sweep import (
    DONE,
    SweepSettings,
    cell_state,
    collect,
    group_rows,
    load_sweep,
    prepare_cell,
    run_cell,
    run_sweep,
    write_summary,
)
from csrl.train.loop import StepInfo, train

REPO = Path(__file__).resolve().parents[2]
TASKS = ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R"]


def write_sweep(path: Path, grid: Any, *, base: dict[str, Any] | None = None, **extra: Any) -> Path:
    spec = {
        "model": {"model": "some/model", "pooler": "cls"},
        "train": {"batch_size": 8, "max_steps": 3, "eval_every": 0, "progress": False},
        **(base or {}),
        "grid": grid,
        "output_dir": str(path.parent / "out"),
        **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- expansion
def test_grid_is_cartesian_in_file_order(tmp_path: Path) -> None:
    grid = {"loss.temperature": [0.01, 0.05, 0.1], "model.pooler": ["cls", "mean"], "train.seed": [1, 2, 3]}
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", grid))
    assert len(sweep.cells) == 18 and len({c.name for c in sweep.cells}) == 18
    got = [(c.config.loss.params["temperature"], c.config.model.pooler, c.config.train.seed) for c in sweep.cells]
    assert got == [(t, p, s) for t in (0.01, 0.05, 0.1) for p in ("cls", "mean") for s in (1, 2, 3)]
    first = sweep.cells[0]
    assert first.name == "temperature=0.01__pooler=cls__seed=1"
    assert first.values == {"loss.temperature": "0.01", "model.pooler": "cls", "train.seed": "1"}
    assert Path(first.config.output_dir) == tmp_path / "out" / "cells" / first.name
    assert [a.is_seed for a in sweep.axes] == [False, False, True]
    assert first.config.train.batch_size == 8  # the base is kept


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"loss.tempreature": [0.1]}, "tempreature"),
        ({"train.bogus": [1]}, "unknown config key 'train.bogus'"),
        ({"modle.pooler": ["cls"]}, "unknown config key 'modle'"),
        ({"model.pooler": ["nope"]}, "unknown pooler"),
        ({"train.batch_size": [0]}, "batch_size must be >= 1"),
        ({"train.seed": 3}, "non-empty list"),
        ({"output_dir": ["a", "b"]}, "output_dir"),
        ({"p": [{"label": "x"}]}, "at least one dotted key"),
        ({"train.seed": [1, 1]}, "repeated values"),
        ({}, "non-empty `grid:`"),
    ],
)
def test_bad_grids_are_refused(tmp_path: Path, grid: Any, message: str) -> None:
    with pytest.raises(CsrlError, match=message):
        load_sweep(write_sweep(tmp_path / "s.yaml", grid))


def test_bad_sweep_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="unknown sweep key"):
        load_sweep(write_sweep(tmp_path / "a.yaml", {"train.seed": [1]}, extras=1))
    with pytest.raises(CsrlError, match="sweep.final_tasks"):
        load_sweep(write_sweep(tmp_path / "b.yaml", {"train.seed": [1]}, sweep={"final_tasks": "some"}))
    with pytest.raises(CsrlError, match="unknown config key 'sweep.job'"):
        load_sweep(write_sweep(tmp_path / "c.yaml", {"train.seed": [1]}, sweep={"job": 2}))
    with pytest.raises(CsrlError, match="base config"):
        load_sweep(write_sweep(tmp_path / "d.yaml", {"train.seed": [1]}, base={"base": "missing.yaml"}))


def test_bundles_base_and_subgrids(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text(
        yaml.safe_dump(
            {
                "train": {"lr": 1e-4, "batch_size": 64},
                "loss": {"name": "infonce", "params": {"temperature": 0.05}},
                "output_dir": "ignored",
            }
        )  # fmt: skip
    )
    grid = {"pooling": [{"label": "cls-mlp", "model.pooler": "cls", "model.head": "linear_tanh"},
                        {"model.pooler": "mean", "model.head": "none"}]}  # fmt: skip
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", grid, base={"base": "recipes/r.yaml"}))
    assert [c.name for c in sweep.cells] == ["pooling=cls-mlp", "pooling=mean-none"]
    cfg = sweep.cells[1].config
    assert (cfg.model.pooler, cfg.model.head, cfg.train.lr, cfg.train.batch_size) == ("mean", "none", 1e-4, 8)
    assert sweep.cells[0].config.loss.params == {"temperature": 0.05}
    # another loss in the sweep replaces the base's loss section (its parameters would not apply)
    sweep = load_sweep(write_sweep(tmp_path / "t.yaml", {"train.seed": [1]},
                                   base={"base": "recipes/r.yaml", "loss": {"name": "mpt"}}))  # fmt: skip
    assert sweep.cells[0].config.loss.name == "mpt" and sweep.cells[0].config.loss.params == {}


def test_shipped_sweeps_resolve() -> None:
    files = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
    assert {f.stem for f in files} >= {"cpu-demo", "paperA-temperature", "paperA-batch-size", "paperA-pooling",
                                        "paperB-components"}  # fmt: skip
    sizes = {f.stem: len(load_sweep(f).cells) for f in files}
    assert sizes["cpu-demo"] == 18 and sizes["paperA-temperature"] == 5 and sizes["paperA-pooling"] == 3
    b = load_sweep(REPO / "configs" / "sweeps" / "paperB-components.yaml")
    assert sizes["paperB-components"] == 13  # three one-parameter sweeps sharing their centre
    centre = [
        c for c in b.cells if c.values == {"loss.gd_margin": "0.3", "loss.ratio": "1", "loss.temperature": "0.05"}
    ]
    assert len(centre) == 1 and centre[0].config.loss.name == "surrogate"
    assert all(not c.config.train.final_eval for c in b.cells)  # final_tasks: stsb -> the sweep scores STS-B


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


# ----------------------------------------------------------------------------- collection
def fake_sweep(tmp_path: Path, seed: int = 0) -> tuple[Path, dict[str, dict[str, float]]]:
    """A finished 2 x 3 sweep with random results; one cell of the second group is unfinished."""
    rng = random.Random(seed)
    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", {"loss.temperature": [0.05, 0.1], "train.seed": [1, 2, 3]}))
    sweep.output_dir.mkdir(parents=True)
    (sweep.output_dir / "sweep.json").write_text(json.dumps(sweep.to_dict()))
    truth = {}
    for k, cell in enumerate(sweep.cells):
        prepare_cell(cell)
        lines = []
        for s in range(0, 21):
            rec: dict[str, float] = {"step": s, "train/loss": rng.random()} if s else {"step": s}
            if s % 5 == 0:
                rec.update({"geometry/anisotropy": rng.random(), "geometry/alignment": rng.random(),
                            "geometry/uniformity": -rng.random() * 3})  # fmt: skip
            lines.append(json.dumps(rec))
            if s and s % 10 == 0:
                lines.append(json.dumps({"step": s, "eval/stsb_dev_spearman": rng.uniform(50, 80)}))
        (cell.dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        if k == 5:
            continue  # unfinished
        sts = {t: rng.uniform(50, 85) for t in TASKS}
        sts["Avg"] = float(np.mean(list(sts.values())))
        (cell.dir / "results").mkdir()
        (cell.dir / "results" / "sts_test.json").write_text(json.dumps({"reported": sts}))
        (cell.dir / DONE).write_text(json.dumps({"seconds": 10.0 + k}))
        truth[cell.name] = sts
    return sweep.output_dir, truth


def test_collection_mean_std_over_seeds(tmp_path: Path) -> None:
    root, truth = fake_sweep(tmp_path)
    col = collect(root)
    assert [c.state for c in col.cells] == ["done"] * 5 + ["started"]
    rows = group_rows(col)
    assert [(r["values"], r["n"], r["of"]) for r in rows] == [
        ({"loss.temperature": "0.05"}, 3, 3),
        ({"loss.temperature": "0.1"}, 2, 3),
    ]
    names = list(truth)
    for r, members in zip(rows, (names[:3], names[3:5]), strict=True):
        for task in ("STS-B", "Avg", "SICK-R"):
            vals = np.array([truth[n][task] for n in members])
            key = "STS-B test" if task == "STS-B" else task
            mean, std = r["stats"][key]
            assert mean == pytest.approx(vals.mean(), abs=1e-12)
            assert std == pytest.approx(vals.std(ddof=1), abs=1e-12)
        devs = [max(json.loads(x).get("eval/stsb_dev_spearman", -1) for x in (root / "cells" / n / "metrics.jsonl")
                    .read_text().splitlines()) for n in members]  # fmt: skip
        assert r["stats"]["STS-B dev (best)"][0] == pytest.approx(np.mean(devs))
    # final geometry = the last logged value
    last = json.loads((root / "cells" / names[0] / "metrics.jsonl").read_text().splitlines()[-2])
    assert col.cells[0].final["geometry/anisotropy"] == last["geometry/anisotropy"]

    paths = write_summary(root)
    names_out = {p.name for p in paths}
    assert {"results.md", "cells.csv", "groups.csv", "collected.json", "ablation_loss.temperature.png"} <= names_out
    assert {"overlay_training.png", "overlay_geometry.png", "overlay_align_uniform.png"} <= names_out
    groups = list(csv.DictReader((root / "summary" / "groups.csv").open()))
    vals = np.array([truth[n]["Avg"] for n in names[:3]])
    assert float(groups[0]["Avg mean"]) == pytest.approx(vals.mean(), abs=1e-12)
    assert float(groups[0]["Avg std"]) == pytest.approx(vals.std(ddof=1), abs=1e-12)
    cells = list(csv.DictReader((root / "summary" / "cells.csv").open()))
    assert [r["state"] for r in cells] == ["done"] * 5 + ["started"] and cells[5]["Avg"] == ""
    md = (root / "summary" / "results.md").read_text()
    assert f"{vals.mean():.2f} ± {vals.std(ddof=1):.2f}" in md
    json.loads((root / "summary" / "collected.json").read_text(), parse_constant=lambda c: pytest.fail(c))


def test_cli_dry_run_and_collect_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = fake_sweep(tmp_path)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", str(tmp_path / "s.yaml"), "--dry-run"])
    assert args.func(args) == 0
    assert "6 cells" in capsys.readouterr().out
    args = parser.parse_args(["sweep", str(tmp_path / "s.yaml"), "--collect-only"])
    assert args.func(args) == 0
    assert "## Groups" in capsys.readouterr().out and (root / "summary" / "cells.csv").exists()
    args = parser.parse_args(["sweep", str(tmp_path / "s.yaml"), "--collect-only", "--output-dir", str(tmp_path / "x")])
    with pytest.raises(CsrlError, match="nothing to collect"):
        args.func(args)


def test_library_never_imports_the_cli() -> None:
    src = REPO / "src" / "csrl"
    for path in [*(src / "report").glob("*.py"), src / "train" / "dynamics.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("csrl.cli") for n in names), path
