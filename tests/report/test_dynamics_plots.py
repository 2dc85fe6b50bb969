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


def _axes_by_title(fig):  # type: ignore[no-untyped-def]
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def test_figures_label_axes_use_integer_steps_and_say_constant(tmp_path: Path) -> None:
    synthetic_metrics(tmp_path / "run" / "metrics.jsonl")
    recs = read_metrics(tmp_path / "run")
    for r in recs:  # a share that is 0 at every step and R = 1 +- 1e-7 (float noise): nothing to plot
        if "paradigm/gd_mean" in r:
            r["paradigm/same_view_share"] = 0.0
            r["paradigm/r_mean"] = 1.0 + (1e-7 if r["step"] % 2 else -1e-7)
    figs = dynamics_figures({"run": [recs]}, "run · model m · last layer")
    para = _axes_by_title(figs["paradigm"])
    flat = para["R: pull/push ratio (mean) (constant)"]
    assert not flat.lines and "constant over 30 logged steps" in flat.texts[0].get_text()
    assert "1 (span 2e-07)" in flat.texts[0].get_text()
    assert not para["W mass on same-view negatives (constant)"].lines
    moving = para["GD: gradient dissipation (mean)"]
    assert moving.lines and moving.get_ylabel() == r"$\mathrm{GD}$ (mean over anchors)"
    for name in ("geometry", "training", "paradigm"):
        fig = figs[name]
        fig.canvas.draw()
        assert fig._suptitle is not None and "last layer" in fig._suptitle.get_text()
        for ax in fig.axes:
            if not ax.lines:
                continue
            assert ax.get_ylabel() and ax.get_xlabel() == "step (optimizer updates)", ax.get_title()
            ticks = [t.get_text().replace("\u2212", "-") for t in ax.get_xticklabels() if t.get_text()]
            assert ticks and all(t.lstrip("-").isdigit() for t in ticks), (ax.get_title(), ticks)
    lr = _axes_by_title(figs["training"])["learning rate (constant)"]  # 3e-5 at every step: said, with its value
    assert "3e-05" in lr.texts[0].get_text()


def test_layers_figure_one_line_per_layer_with_a_labelled_colour_bar(tmp_path: Path) -> None:
    recs = [{"step": s, **{f"layers/L{i}/{k}": (i + 1) * (1 - s / 50) for i in range(4)
                           for k in ("anisotropy", "norm_mean", "rogue_top_share")}} for s in range(0, 21, 5)]  # fmt: skip
    figs = dynamics_figures({"r": [recs]})
    assert set(figs) == {"layers"}
    fig = figs["layers"]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 3 and all(len(ax.lines) == 4 for ax in panels)
    bars = [ax for ax in fig.axes if not ax.get_title()]
    assert len(bars) == 1 and "layer" in bars[0].get_ylabel()
    np.testing.assert_allclose(panels[0].lines[2].get_ydata(), [3 * (1 - s / 50) for s in range(0, 21, 5)])


def test_stages_figure_puts_pretraining_and_simcse_side_by_side(tmp_path: Path) -> None:
    from csrl.report.dynamics import stages_figure

    synthetic_metrics(tmp_path / "a" / "metrics.jsonl")
    synthetic_metrics(tmp_path / "b" / "metrics.jsonl", scale=1.1)
    first = [{"step": s, "mlm/loss": 5.0 - s / 100, "geometry/anisotropy": 0.2 + s / 1000} for s in range(0, 201, 50)]
    fig = stages_figure(first, {"tau=0.05": [read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")]})
    assert fig is not None
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in titled] == ["anisotropy baseline: masked-LM pretraining", "SimCSE"]
    left, right = titled
    assert left.get_shared_y_axes().joined(left, right)
    np.testing.assert_allclose(left.lines[0].get_ydata(), [0.2 + s / 1000 for s in range(0, 201, 50)])
    np.testing.assert_allclose(right.lines[0].get_ydata()[0], 0.3 * 1.05)  # the mean of the two seeds at step 0
    assert stages_figure(first, {}) is None
