from __future__ import annotations

import argparse
import json
import math
import random
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from csrl.cli.report_cmds import add_parsers
from csrl.errors import CsrlError
from csrl.report.html import build_report, write_report
from csrl.report.sweep_layout import DONE
from csrl.sweep import load_sweep, prepare_cell

CHROMIUM = Path("/usr/bin/chromium")
TASKS = ["STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R"]


def fake_run(run: Path, seed: int = 0, steps: int = 20) -> None:
    """A run folder as the trainer leaves it: config.json, metrics.jsonl, results/sts_*.json."""
    rng = random.Random(seed)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps({"model": {"pooler": "cls"}, "train": {"lr": 3e-5, "seed": seed}}))
    lines = []
    for s in range(steps + 1):
        rec: dict[str, float] = {"step": s}
        if s:
            rec.update({"train/loss": math.exp(-s / 8) + rng.random() / 10, "paradigm/gd_mean": 1 - s / 40,
                        "paradigm/w_hardest": 0.1 + s / 100})  # fmt: skip
        if s % 5 == 0:
            rec.update({"geometry/anisotropy": 0.3 - s / 100, "geometry/alignment": 0.1 + s / 300,
                        "geometry/uniformity": -1.5 - s / 20 - rng.random() / 10,
                        "geometry/functional_self_similarity": 0.5 - s / 100,
                        "geometry/content_self_similarity": 0.6 + s / 100})  # fmt: skip
        lines.append(json.dumps(rec))
        if s and s % 10 == 0:
            lines.append(json.dumps({"step": s, "eval/stsb_dev_spearman": 70 + s / 2 + rng.random()}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "results").mkdir(exist_ok=True)
    for name, shift in (("sts_before.json", 0.0), ("sts_test.json", 5.0)):
        rep = {t: 60 + shift + rng.random() * 10 for t in TASKS}
        rep["Avg"] = sum(rep.values()) / len(rep)
        (run / "results" / name).write_text(json.dumps({"reported": rep, "reported_aggregate": "all"}))


def fake_sweep(tmp_path: Path) -> Path:
    spec = {"model": {"model": "m", "pooler": "cls"}, "grid": {"loss.temperature": [0.05, 0.1], "train.seed": [1, 2]},
            "output_dir": str(tmp_path / "sweep")}  # fmt: skip
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    sweep = load_sweep(tmp_path / "s.yaml")
    sweep.output_dir.mkdir(parents=True)
    (sweep.output_dir / "sweep.json").write_text(json.dumps(sweep.to_dict()))
    for k, cell in enumerate(sweep.cells):
        prepare_cell(cell)
        fake_run(cell.dir, seed=k)
        (cell.dir / DONE).write_text(json.dumps({"seconds": 12.5}))
    return sweep.output_dir


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.refs += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "data", "action")]


def _self_contained(page: str) -> _Refs:
    p = _Refs()
    p.feed(page)
    assert p.refs and all(r.startswith(("data:image/png;base64,", "#")) for r in p.refs), p.refs[:5]
    assert "link" not in p.tags and "iframe" not in p.tags
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    return p


def _render(html_file: Path, tmp_path: Path) -> tuple[str, str]:
    """Load the page in headless chromium; returns (the DOM after load, chromium's log)."""
    if not CHROMIUM.exists():
        pytest.skip("needs /usr/bin/chromium (Debian: apt-get install -y chromium)")
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
        "--dump-dom", html_file.as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def _check(dom: str) -> dict[str, str]:
    m = re.search(r'<div id="csrl-check"([^>]*)>', dom)
    assert m is not None, dom[:500]
    return dict(re.findall(r'(data-[a-z]+)="([^"]*)"', m.group(1)))


def test_run_report_renders_in_chromium(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fake_run(run)
    out = write_report(run)
    assert out == run / "report.html"
    page = out.read_text()
    refs = _self_contained(page)
    n_images = sum(r.startswith("data:") for r in refs.refs)
    assert n_images == 4  # align_uniform, geometry, training, paradigm
    assert "before training" in page and "after training (best dev)" in page and "&quot;lr&quot;: 3e-05" in page
    assert "geometry/anisotropy" in page  # the metrics summary

    dom, log = _render(out, tmp_path)
    check = _check(dom)
    assert check == {"data-ok": "true", "data-images": str(n_images), "data-tables": "2"}, check
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console


def test_sweep_report_renders_in_chromium(tmp_path: Path) -> None:
    root = fake_sweep(tmp_path)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(root), "--out", str(tmp_path / "sweep.html")])
    assert args.func(args) == 0
    page = (tmp_path / "sweep.html").read_text()
    _self_contained(page)
    assert "temperature=0.05__seed=1" in page and "Groups (mean ± std over seeds)" in page
    dom, log = _render(tmp_path / "sweep.html", tmp_path)
    check = _check(dom)
    assert check["data-ok"] == "true" and int(check["data-images"]) >= 5 and int(check["data-tables"]) == 4, check
    assert not [line for line in log.splitlines() if "CONSOLE" in line]


def test_the_check_catches_a_broken_figure(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fake_run(run)
    page = build_report(run)
    broken = re.sub(r"base64,[A-Za-z0-9+/=]{100}", "base64,AAAA", page, count=1)
    assert broken != page
    (tmp_path / "broken.html").write_text(broken)
    dom, _ = _render(tmp_path / "broken.html", tmp_path)
    assert _check(dom)["data-ok"] == "false"


def test_report_needs_a_run_or_sweep(tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="not a folder"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CsrlError, match="holds no run"):
        build_report(tmp_path / "empty")


def fake_pretrain_run(run: Path, steps: int = 40) -> None:
    """A csrl pretrain folder: config.json (model size), metrics.jsonl with mlm/* and the geometry probe."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": {"layers": 2, "hidden": 32}, "train": {"lr": 1e-3}}))
    lines = []
    for s in range(0, steps + 1, 10):
        rec = {"step": s, "mlm/loss": 10 - s / 10, "train/lr": 1e-3 * s / steps, "mlm/train_accuracy": s / 200,
               "geometry/anisotropy": 0.35 - s / 400, "geometry/functional_self_similarity": 0.7 - s / 300,
               "geometry/content_self_similarity": 0.7 - s / 500, "layers/L0/anisotropy": 0.3,
               "layers/L1/anisotropy": 0.3 + s / 100, "layers/L0/norm_mean": 5.0, "layers/L1/norm_mean": 5 + s / 50,
               "layers/L0/rogue_top_share": 0.1, "layers/L1/rogue_top_share": 0.1 + s / 400}  # fmt: skip
        lines.append(json.dumps(rec))
        lines.append(json.dumps({"step": s, "mlm/accuracy": s / 250, "mlm/heldout_loss": 10.5 - s / 10}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run / "model").mkdir()


def test_pretraining_then_simcse_on_one_page_renders_in_chromium(tmp_path: Path) -> None:
    fake_pretrain_run(tmp_path / "mlm")
    fake_run(tmp_path / "simcse")
    sweep = fake_sweep(tmp_path)
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    out = tmp_path / "stages.html"
    argv = ["report", str(tmp_path / "mlm"), str(tmp_path / "simcse"), str(sweep), "--out", str(out),
            "--figures", str(tmp_path / "figs")]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    page = out.read_text()
    refs = _self_contained(page)
    assert "Stages: mlm → simcse" in page and "Stages: mlm → sweep" in page
    assert "mlm: Learning dynamics" in page and "simcse: STS results" in page and "sweep: Groups" in page
    assert "held-out MLM accuracy 0.1600" in page
    figs = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert {"stages.png", "stages-2.png", "pretraining.png", "layers.png"} <= set(figs)
    assert len(figs) == sum(r.startswith("data:") for r in refs.refs)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in (tmp_path / "figs").iterdir())
    dom, log = _render(out, tmp_path)
    check = _check(dom)
    assert check["data-ok"] == "true" and int(check["data-images"]) == len(figs), check
    assert not [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
