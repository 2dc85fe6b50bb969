"""Kill a training subprocess with SIGKILL at random steps, resume, and compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

STEPS = 10


def _argv(model: Path, corpus: Path, out: Path) -> list[str]:
    sets = {
        "model.model": str(model),
        "data.train_files": f"[{corpus}]",
        "train.batch_size": "8",
        "train.max_steps": str(STEPS),
        "train.eval_every": "0",
        "train.checkpoint_every": "2",
        "train.keep_checkpoints": "2",
        "train.final_eval": "false",
        "train.progress": "false",
        "train.lr": "1e-3",
    }
    argv = [
        sys.executable,
        "-m",
        "csrl",
        "train",
        "configs/quickstart-cpu.yaml",
        "--output-dir",
        str(out),
        "--threads",
        "1",
    ]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{STEPS:07d}" / "model.safetensors"))


def _logged_steps(run: Path) -> list[int]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["step"] for x in lines if "train/loss" in json.loads(x)]


@pytest.mark.slow
def test_kill_minus_nine_and_resume_is_bit_identical(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    subprocess.run(_argv(tiny_model_dir, tiny_corpus, ref), check=True, env=_env(), capture_output=True)
    expected = _final_weights(ref)
    rng = random.Random(1234)
    for trial in range(5):
        run = tmp_path / f"trial{trial}"
        kill_at = rng.randint(1, STEPS - 1)
        proc = subprocess.Popen(_argv(tiny_model_dir, tiny_corpus, run), env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            log = run / "metrics.jsonl"
            if log.exists() and any(s >= kill_at for s in _logged_steps(run)):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        resumed = subprocess.run(
            [*_argv(tiny_model_dir, tiny_corpus, run)[:4], "--resume", str(run), "--threads", "1"],
            env=_env(), capture_output=True, text=True,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        got = _final_weights(run)
        for k in expected:
            assert torch.equal(expected[k], got[k]), (trial, kill_at, k)
        assert _logged_steps(run) == list(range(1, STEPS + 1)), (trial, kill_at)
        assert not list((run / "checkpoints").glob(".*")), "temporary checkpoint folders left behind"
