"""Kill -9 a training subprocess at random steps, resume it each time, and compare with an uninterrupted run.

One run is killed ``KILLS`` times: each resumed process is the next one killed, at a step drawn 1-3 steps
past the last step logged, after a random extra delay of up to 40 ms (so kills land mid-step, mid-log and
mid-checkpoint). Every resume must take over the stale lock its killed predecessor left and continue
bit-identically: the final weights must equal those of an uninterrupted run with the same seed (CPU, fp32),
and the metrics log must hold every step once with exactly the reference's loss, so a broken resume is
caught at the first step it changed, which names the kill. The kill points come from a seed printed on
stdout and quoted in every assertion; ``CSRL_FAULT_SEED=N`` replays a failure.

Each process is forked from a "zygote" that imported csrl, torch and transformers once: a real process
running ``csrl.cli.main.main`` (its own pid, files, lock and flock), killed with SIGKILL like any other; only
the 3-5 s import of a cold ``python -m csrl`` is shared, which keeps 12 processes within the time budget.
"""

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

from csrl.train.run_lock import LOCK_FILE, RESUME_LOG

STEPS = 45
KILLS = 10


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
        "train.precision": "fp32",
    }
    argv = ["train", "configs/quickstart-cpu.yaml", "--output-dir", str(out), "--threads", "1"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def _resume_argv(run: Path) -> list[str]:
    return ["train", "--resume", str(run), "--threads", "1"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}


ZYGOTE = """
import json, os, sys
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from csrl.cli.main import main
import csrl.pipelines.train, csrl.train.loop, transformers.models.bert.modeling_bert  # the slow imports, once
for line in sys.stdin:
    cmd = json.loads(line)
    if "wait" in cmd:
        _, status = os.waitpid(cmd["wait"], 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.argv = ["csrl", *cmd["argv"]]
        try:
            code = main(cmd["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


class Zygote:
    """Forks ``csrl`` processes from one process that has done the imports."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip

    def _ask(self, cmd: dict[str, object]) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def start(self, argv: list[str], log: Path) -> int:
        return self._ask({"argv": argv, "log": str(log)})["pid"]

    def wait(self, pid: int) -> int:
        """The exit code (-9 for SIGKILL)."""
        return self._ask({"wait": pid})["status"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _losses(run: Path) -> list[tuple[int, float]]:
    out = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if "train/loss" in rec:
            out.append((rec["step"], rec["train/loss"]))
    return out


def _last_step(run: Path) -> int:
    try:
        return max((s for s, _ in _losses(run)), default=0)
    except FileNotFoundError:
        return 0


def _kill_when(zygote: Zygote, pid: int, run: Path, target: int, delay: float) -> int:
    deadline = time.time() + 120
    while time.time() < deadline and _last_step(run) < target and _running(pid):
        time.sleep(0.01)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    return zygote.wait(pid)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
def test_kill_minus_nine_and_resume_is_bit_identical(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("CSRL_FAULT_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"fault-injection seed: {seed} (replay with CSRL_FAULT_SEED={seed})")
    rng = random.Random(seed)
    zygote = Zygote()
    try:
        _check(zygote, rng, seed, tiny_model_dir, tiny_corpus, tmp_path)
    finally:
        zygote.close()


def _check(zygote: Zygote, rng: random.Random, seed: int, model: Path, corpus: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    assert zygote.wait(zygote.start(_argv(model, corpus, ref), tmp_path / "ref.log")) == 0, (
        tmp_path / "ref.log"
    ).read_text()[-3000:]
    run = tmp_path / "run"
    kills: list[tuple[int, int, float]] = []  # (target step, last step logged when killed, extra delay)
    for trial in range(KILLS):
        target, delay = _last_step(run) + rng.randint(1, 3), rng.uniform(0.0, 0.04)
        argv = _argv(model, corpus, run) if trial == 0 else _resume_argv(run)
        log = tmp_path / f"attempt-{trial}.log"
        code = _kill_when(zygote, zygote.start(argv, log), run, target, delay)
        kills.append((target, _last_step(run), delay))
        where = f"seed {seed}, kill {trial + 1} of {KILLS}, kills so far (target, reached, delay): {kills}"
        out = log.read_text(errors="replace")
        assert code == -signal.SIGKILL, f"{where}: it ended by itself ({code}): {out[-2000:]}"
        assert kills[-1][1] >= target, f"{where}: step {target} was not reached in 120 s: {out[-2000:]}"
        if trial:
            assert "taking over the stale lock" in out, f"{where}: {out[-2000:]}"

    log = tmp_path / "final.log"
    code = zygote.wait(zygote.start(_resume_argv(run), log))
    where = f"seed {seed}, kills (target, reached, delay): {kills}"
    assert code == 0, f"{where}: {log.read_text()[-3000:]}"
    expected, got = _losses(ref), _losses(run)
    diverged = next((a for a, b in zip(expected, got, strict=False) if a != b), None)
    assert diverged is None, f"{where}: first differing step {diverged} (reference, got): {expected} {got}"
    assert [s for s, _ in got] == list(range(1, STEPS + 1)), f"{where}: steps logged {[s for s, _ in got]}"
    final = Path("checkpoints") / f"step-{STEPS:07d}" / "model.safetensors"
    a, b = load_file(str(ref / final)), load_file(str(run / final))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), where
    assert not list((run / "checkpoints").glob(".*")), f"{where}: temporary checkpoint folders left behind"
    assert not (run / LOCK_FILE).exists(), where
    assert len((run / RESUME_LOG).read_text().splitlines()) == KILLS, where  # one line per resume
