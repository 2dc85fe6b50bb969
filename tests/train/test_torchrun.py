"""``torchrun --nproc_per_node 2 -m csrl train``: the real launcher, the real CLI, gloo on CPU.

With dropout off the two-rank run must follow the single-process run on the same global batches:
the same logged loss at every step (not multiplied by the world size), one
``metrics.jsonl`` line per step, and checkpoints and the final model written once, by rank 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ddp_helpers import free_port, torchrun_overrides

from csrl.train.config import load_config
from csrl.train.loop import train

STEPS = 4


def _overrides(model: Path, corpus: Path, out: Path) -> list[str]:
    return torchrun_overrides(model, corpus, out, batch_size=8, steps=STEPS)


def _losses(run: Path) -> dict[int, float]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if "train/loss" in r]
    assert steps == sorted(set(steps)), f"a step was logged twice: {steps}"
    return {r["step"]: r["train/loss"] for r in recs if "train/loss" in r}


def test_torchrun_two_ranks_match_one_process(no_dropout_model: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    single = train(load_config(None, _overrides(no_dropout_model, tiny_corpus, tmp_path / "single")))
    assert single.steps == STEPS

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("loss:\n  name: infonce\n")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "csrl",
        "train",
        str(recipe),
        "--no-before",
    ]
    for o in _overrides(no_dropout_model, tiny_corpus, tmp_path / "ddp"):
        cmd += ["--set", o]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run: ") == 1, "only rank 0 reports"
    assert "steps: 4" in proc.stdout

    ddp = tmp_path / "ddp"
    ref, got = _losses(tmp_path / "single"), _losses(ddp)
    assert got.keys() == ref.keys() == set(range(1, STEPS + 1))
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-5), step
    ckpts = sorted(p.name for p in (ddp / "checkpoints").iterdir())
    assert ckpts == sorted(p.name for p in (tmp_path / "single" / "checkpoints").iterdir())

    # the losses at steps 2..4 depend on every earlier update, so they check the weights' trajectory;
    # the final model is written once, by rank 0
    assert (ddp / "best" / "model.safetensors").exists()
