from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from csrl.cli.report_cmds import add_parsers, cmd_dynamics
from csrl.errors import CsrlError
from csrl.report.dynamics import band, dynamics_figures, plot_run, read_metrics, series

PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_metrics(path: Path, steps: int = 30, *, scale: float = 1.0, dynamics_every: int = 5) -> None:
    """A metrics.jsonl as the trainer writes it: train/paradigm every step, geometry every k, eval every 10."""
    lines = []
    for s in range(steps + 1):
        rec: dict[str, float | int] = {"step": s}
        if s:
            rec.update({"train/loss": 2 * math.exp(-s / 10), "train/lr": 3e-5, "paradigm/gd_mean": 0.9 - s / 100,
                        "paradigm/w_hardest": 0.2 + s / 200, "paradigm/r_mean": 1.0,
                        "paradigm/pos_angle_deg": 40 - s / 2, "paradigm/neg_angle_deg": 80.0})  # fmt: skip
        if s % dynamics_every == 0:
            geo = {"anisotropy": 0.3 * math.exp(-s / 20), "norm_mean": 8 - s / 10, "uniformity": -1.5 - s / 30,
                   "alignment": 0.1 + s / 300, "functional_self_similarity": 0.5 - s / 200,
                   "content_self_similarity": 0.7 + s / 200, "intra_similarity": 0.6 + s / 100}  # fmt: skip
            rec.update({f"geometry/{k}": v * scale for k, v in geo.items()})
        lines.append(json.dumps(rec))
        if s and s % 10 == 0:
            lines.append(json.dumps({"step": s, "eval/stsb_dev_spearman": 60 + s * scale}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + '{"step": 31, "train/lo')  # the last line cut by a kill


def test_read_and_series(tmp_path: Path) -> None:
    synthetic_metrics(tmp_path / "run" / "metrics.jsonl")
    recs = read_metrics(tmp_path / "run")
    assert recs[-1]["step"] == 30 and len(recs) == 31 + 3  # the cut line is dropped
    steps, vals = series(recs, "eval/stsb_dev_spearman")
    assert steps.tolist() == [10, 20, 30] and vals.tolist() == [70.0, 80.0, 90.0]
    steps, _ = series(recs + [{"step": 40, "eval/stsb_dev_spearman": float("nan")}], "eval/stsb_dev_spearman")
    assert steps.tolist() == [10, 20, 30]  # non-finite values are dropped
    steps, vals = series([{"step": 1, "x": 1.0}, {"step": 1, "x": 2.0}], "x")
    assert vals.tolist() == [2.0]  # the last value of a step wins
    with pytest.raises(CsrlError, match="no metrics log"):
        read_metrics(tmp_path / "missing")


def test_band_is_mean_and_sample_std_over_shared_steps() -> None:
    logs = [[{"step": s, "k": float(s * (i + 1))} for s in range(4 + i)] for i in range(3)]
    steps, mean, std = band(logs, "k")
    assert steps.tolist() == [0, 1, 2, 3]
    table = np.array([[s * (i + 1) for s in range(4)] for i in range(3)], dtype=float)
    np.testing.assert_allclose(mean, table.mean(0))
    np.testing.assert_allclose(std, table.std(0, ddof=1))
    steps, mean, std = band(logs[:1], "k")
    assert std.tolist() == [0.0] * 4


def test_plot_run_writes_every_figure_atomically(tmp_path: Path) -> None:
    run = tmp_path / "run"
    synthetic_metrics(run / "metrics.jsonl")
    paths = plot_run(run)
    assert sorted(p.name for p in paths) == ["align_uniform.png", "geometry.png", "paradigm.png", "training.png"]
    for p in paths:
        assert p.parent == run / "dynamics" and p.read_bytes().startswith(PNG) and p.stat().st_size > 5000
    assert sorted(x.name for x in (run / "dynamics").iterdir()) == sorted(p.name for p in paths)  # no temporaries


def test_only_existing_series_are_drawn(tmp_path: Path) -> None:
    recs = [{"step": s, "train/loss": 1.0 / s} for s in range(1, 5)]
    assert list(dynamics_figures({"r": [recs]})) == ["training"]
    assert dynamics_figures({"r": [[{"step": 1}]]}) == {}


def test_overlay_of_groups(tmp_path: Path) -> None:
    for i, scale in enumerate((1.0, 1.1, 0.9)):
        synthetic_metrics(tmp_path / f"r{i}" / "metrics.jsonl", scale=scale)
    logs = [read_metrics(tmp_path / f"r{i}") for i in range(3)]
    figs = dynamics_figures({"t=0.05": logs[:2], "t=0.1": logs[2:]})
    assert set(figs) == {"align_uniform", "geometry", "training", "paradigm"}


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic_metrics(tmp_path / "run" / "metrics.jsonl")
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dynamics", str(tmp_path / "run"), "--out", str(tmp_path / "figs")])
    assert args.func(args) == 0
    assert len(list((tmp_path / "figs").glob("*.png"))) == 4
    with pytest.raises(SystemExit):  # a missing run folder is refused by the option's type (exit 2) ...
        parser.parse_args(["dynamics", str(tmp_path / "nope")])
    assert "run folder not found" in capsys.readouterr().err
    with pytest.raises(CsrlError, match="does not exist"):  # ... and by the command itself
        cmd_dynamics(argparse.Namespace(run_dir=str(tmp_path / "nope"), out=None))
