from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_files import write_sweep

from csrl.errors import CsrlError
from csrl.sweep.grid import load_sweep

REPO = Path(__file__).resolve().parents[2]


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
