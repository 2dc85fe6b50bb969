"""Resume checks what it resumes: a change of the trajectory is refused with a diff, cadence changes are
applied and recorded, and the training data is compared by content."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from csrl.cli.main import main
from csrl.errors import CsrlError
from csrl.train.callbacks import StepInfo
from csrl.train.config import RESUME_CADENCE_KEYS, RunConfig, load_config, resume_changes
from csrl.train.loop import train
from csrl.train.run_lock import FINGERPRINT, RESUME_LOG

STEPS = 6


def _cfg(model: Path, corpus: Path, out: Path, *extra: str) -> RunConfig:
    return load_config(None, [f"model.model={model}", f"data.train_files=[{corpus}]", f"output_dir={out}",
                              "train.batch_size=8", f"train.max_steps={STEPS}", "train.eval_every=0",
                              "train.checkpoint_every=2", "train.final_eval=false", "train.progress=false",
                              "train.lr=1e-3", "train.precision=fp32", *extra])  # fmt: skip


class _Crash(Exception):
    pass


def _crash_at(step: int):  # type: ignore[no-untyped-def]
    def crash(info: StepInfo) -> None:
        if info.step == step:
            raise _Crash

    return crash


@pytest.fixture(scope="module")
def crashed(tiny_model_dir: Path, tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed at step 3 (checkpoint at step 2), its corpus a private copy; tests copy the folder."""
    root = tmp_path_factory.mktemp("crashed")
    corpus = root / "corpus.txt"
    shutil.copy(tiny_corpus, corpus)
    with pytest.raises(_Crash):
        train(_cfg(tiny_model_dir, corpus, root / "run"), callbacks=[_crash_at(3)])
    return root


def _copy(crashed: Path, tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(crashed, tmp_path / "c")
    run, corpus = tmp_path / "c" / "run", tmp_path / "c" / "corpus.txt"
    cfg = json.loads((run / "config.json").read_text())  # the copy's paths: same content, new place
    cfg["output_dir"], cfg["data"]["train_files"] = str(run), [str(corpus)]
    (run / "config.json").write_text(json.dumps(cfg))
    return run, corpus


REFUSED = [
    ("train.lr=1e-4", "train.lr: 0.001 -> 0.0001"),
    ("train.batch_size=16", "train.batch_size: 8 -> 16"),
    ("loss.temperature=0.1", "loss.params.temperature: (absent) -> 0.1"),
    ("train.seed=1", "train.seed: 42 -> 1"),
    ("train.max_steps=9", "train.max_steps: 6 -> 9"),
    ("data.max_length=16", "data.max_length: 32 -> 16"),
    ("model.pooler=mean", "model.pooler: 'auto' -> 'mean'"),
    ("train.cache_chunk_size=4", "train.cache_chunk_size: None -> 4"),
]


@pytest.mark.parametrize("override,line", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_trajectory_change_is_refused_with_a_diff(
    crashed: Path, tmp_path: Path, tiny_model_dir: Path, override: str, line: str
) -> None:
    run, corpus = _copy(crashed, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(CsrlError) as err:
        train(_cfg(tiny_model_dir, corpus, run, override), resume=True)
    msg = err.value.message
    assert msg.startswith(f"cannot resume {run}: these settings differ") and f"\n  {line}" in msg, msg
    assert msg.count("\n  ") == 1, msg  # only the changed key is listed
    assert "--output-dir" in (err.value.hint or "")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing written


def test_the_cli_prints_the_diff(crashed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = _copy(crashed, tmp_path)
    code = main(["train", "--resume", str(run), "--set", "train.lr=3e-5", "--set", "train.warmup_steps=2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "  train.lr: 0.001 -> 3e-05\n  train.warmup_steps: 0 -> 2" in err, err


def test_cadence_changes_are_applied_recorded_and_leave_the_trajectory_alone(
    crashed: Path, tmp_path: Path, tiny_model_dir: Path, tiny_corpus: Path
) -> None:
    ref = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "ref"))
    run, corpus = _copy(crashed, tmp_path)
    logs: list[str] = []
    res = train(_cfg(tiny_model_dir, corpus, run, "train.log_every=2",
                     "train.checkpoint_every=1", "train.paradigm_every=0"), resume=True, log=logs.append)  # fmt: skip
    assert res.steps == STEPS
    assert "resume: train.log_every: 1 -> 2 (recorded in resume_log.jsonl)" in logs, logs
    [entry] = [json.loads(x) for x in (run / RESUME_LOG).read_text().splitlines()]
    assert entry["checkpoint"] == "step-0000002" and entry["time"]
    assert entry["changes"] == {"train.checkpoint_every": [2, 1], "train.log_every": [1, 2],
                                "train.paradigm_every": [1, 0]}  # fmt: skip
    saved = json.loads((run / "config.json").read_text())["train"]
    assert (saved["log_every"], saved["checkpoint_every"], saved["paradigm_every"]) == (2, 1, 0)
    assert (run / "checkpoints" / "step-0000005").is_dir()  # the new checkpoint cadence is applied
    a = load_file(str(tmp_path / "ref" / "checkpoints" / f"step-{STEPS:07d}" / "model.safetensors"))
    b = load_file(str(run / "checkpoints" / f"step-{STEPS:07d}" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref_loss = {r["step"]: r["train/loss"] for r in ref.metrics if "train/loss" in r}
    got = {r["step"]: r["train/loss"] for r in res.metrics if "train/loss" in r}
    assert got == {s: ref_loss[s] for s in (1, 2, 4, 6)}  # steps 1-2 from before, then every 2nd step


def test_the_data_is_compared_by_content_not_by_path(crashed: Path, tmp_path: Path, tiny_model_dir: Path) -> None:
    run, corpus = _copy(crashed, tmp_path)
    moved = tmp_path / "elsewhere.txt"
    shutil.copy(corpus, moved)
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # same bytes, other order
    with pytest.raises(CsrlError, match=r"its training data changed since the run started \(.*corpus.txt: ") as err:
        train(_cfg(tiny_model_dir, corpus, run), resume=True)
    assert "sha256" in err.value.message and "by content, not by path" in (err.value.hint or "")
    assert train(_cfg(tiny_model_dir, moved, run), resume=True).steps == STEPS  # moved: fine


def test_a_run_from_before_fingerprints_resumes_with_a_note(
    crashed: Path, tmp_path: Path, tiny_model_dir: Path
) -> None:
    run, corpus = _copy(crashed, tmp_path)
    (run / FINGERPRINT).unlink()
    logs: list[str] = []
    train(_cfg(tiny_model_dir, corpus, run), resume=True, log=logs.append)
    assert any("cannot be compared; recorded now" in m for m in logs), logs
    assert json.loads((run / FINGERPRINT).read_text())["files"][0]["path"] == str(corpus)


def test_resume_changes_classifies_keys() -> None:
    a = load_config(None).to_dict()
    b = load_config(None, ["train.lr=1e-5", "train.eval_every=50", "output_dir=elsewhere",
                           "data.train_files=[x.txt]", "loss.temperature=0.1"]).to_dict()  # fmt: skip
    refused, allowed = resume_changes(a, b, absent="-")
    assert refused == {"train.lr": (3e-5, 1e-5), "loss.params.temperature": ("-", 0.1)}
    assert allowed == {"train.eval_every": (125, 50)}
    assert resume_changes(a, a) == ({}, {})
    assert {"train.log_every", "train.num_threads", "train.keep_checkpoints"} <= RESUME_CADENCE_KEYS
    assert not {"train.lr", "train.seed", "train.precision", "train.cache_chunk_size"} & RESUME_CADENCE_KEYS
