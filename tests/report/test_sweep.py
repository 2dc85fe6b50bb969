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
from csrl.report.sweep import collect, group_rows, write_summary
from csrl.report.sweep_layout import DONE
from csrl.sweep.grid import load_sweep
from csrl.sweep.runner import prepare_cell

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
    for path in [*(src / "report").glob("*.py"), *(src / "sweep").glob("*.py"), src / "train" / "geometry_probe.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("csrl.cli") for n in names), path


def _imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_report_only_reads_records() -> None:
    """report/ starts no process and imports neither training code nor csrl.sweep (which imports report):
    from train only the checkpoint reader."""
    allowed = {"csrl.train.checkpoint"}
    for path in (REPO / "src" / "csrl" / "report").glob("*.py"):
        mods = _imported_modules(path)
        assert not {"subprocess", "multiprocessing", "concurrent.futures"} & mods, path
        assert not {m for m in mods if m.startswith(("csrl.train", "csrl.sweep")) and m not in allowed}, path
