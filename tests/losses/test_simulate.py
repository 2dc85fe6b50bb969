"""Paper B's simulation on a small grid: files written atomically, and the paper's qualitative claims."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from csrl.losses.simulate import TEMPERATURES, gd_r_maps, simulate

GRID, ANCHORS = 14, 150


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("sim")
    return out, simulate(out, grid=GRID, anchors=ANCHORS, seed=0)


def test_files(result: tuple[Path, dict[str, Any]]) -> None:
    out, summary = result
    names = {p.name for p in out.iterdir()}
    assert names == {
        "gd_maps.csv",
        "r_maps.csv",
        "w_share.csv",
        "summary.json",
        "gd_maps.png",
        "w_share.png",
        "r_maps.png",
    }
    with (out / "gd_maps.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == GRID * GRID and set(rows[0]) == {"mu_pos_pi", "mu_neg_pi", "infonce", "arccon", "mpt", "met"}
    assert float(rows[0]["mu_pos_pi"]) == pytest.approx(0.05) and float(rows[-1]["mu_neg_pi"]) == pytest.approx(1.0)
    with (out / "w_share.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == GRID * len(TEMPERATURES)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["gd"] == summary["gd"] and summary["seconds"] > 0
    assert (out / "gd_maps.png").read_bytes()[:4] == b"\x89PNG"


def test_paper_claims(result: tuple[Path, dict[str, Any]]) -> None:
    _, s = result
    gd = s["gd"]
    for name in ("infonce", "arccon"):  # GD fades once the negatives are clearly farther than the positive
        assert gd[name]["neg_closer"] > 0.99 and gd[name]["at_equal_angle"] > 0.9 and gd[name]["neg_far"] < 0.01
        assert gd[name]["intermediate_batch_share"] > 0.2  # a smooth switch
    for name in ("mpt", "met"):  # 0/1 switches: every single batch has GD exactly 0 or 1
        assert gd[name]["intermediate_batch_share"] == 0.0
        assert gd[name]["neg_closer"] == 1.0 and gd[name]["neg_far"] < 0.1
    share = [s["w_hardest_share_common"][str(t)] for t in TEMPERATURES]  # tau = 0.3 ... 0.005
    assert share == sorted(share) and share[-1] > 5 * share[0]
    assert s["r"]["met"]["min"] > 1  # d_hard / d_pos > 1 where the positive is closer
    assert 0 < s["r"]["arccon"]["masked_share"] < 1 and s["r"]["arccon"]["max"] > 1


def test_reproducible_and_shared_negatives_agree(tmp_path: Path) -> None:
    a = gd_r_maps(6, 100, 127, torch.Generator().manual_seed(3))
    b = gd_r_maps(6, 100, 127, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a["gd_infonce"], b["gd_infonce"], atol=0, rtol=0)
    c = gd_r_maps(6, 400, 127, torch.Generator().manual_seed(4), share_negatives=False)
    d = gd_r_maps(6, 400, 127, torch.Generator().manual_seed(5), share_negatives=True)
    for name in ("infonce", "mpt"):  # same distribution per grid point, different noise
        assert (c[f"gd_{name}"] - d[f"gd_{name}"]).abs().max() < 0.15
    with pytest.raises(ValueError, match="grid"):
        simulate(tmp_path, grid=1)
    assert not math.isnan(c["gd_met"].mean().item())


def test_reads_the_declared_paper_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulation takes each loss's hyper-parameters from its class declaration."""
    from csrl.losses.triplet import MPT

    base = gd_r_maps(4, 50, 127, torch.Generator().manual_seed(0))
    monkeypatch.setattr(MPT, "paper_defaults", {"margin": 2.0})  # a margin of 2 never dissipates
    wide = gd_r_maps(4, 50, 127, torch.Generator().manual_seed(0))
    assert base["gd_mpt"].min() < 0.5 and (wide["gd_mpt"] == 1).all()
    torch.testing.assert_close(wide["gd_infonce"], base["gd_infonce"], atol=0, rtol=0)
