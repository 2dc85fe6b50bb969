"""Trackers get exactly what metrics.jsonl gets: TensorBoard, and W&B / MLflow offline when installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from csrl.errors import CsrlError
from csrl.train.config import load_config
from csrl.train.loop import train
from csrl.train.trackers import open_trackers


def _cfg(model: Path, corpus: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"model.model={model}",
            f"data.train_files=[{corpus}]",
            f"output_dir={out}",
            "train.batch_size=4",
            "train.max_steps=3",
            "train.eval_every=0",
            "train.final_eval=false",
            "train.progress=false",
            "train.paradigm_every=0",
            *extra,
        ],
    )


def _jsonl_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_unknown_tracker_is_refused() -> None:
    with pytest.raises(CsrlError, match="unknown tracker"):
        load_config(None, ["train.report_to=[tensorboard, neptune]"])


def test_tensorboard_gets_the_logged_losses(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_corpus, run), log=lambda m: None)
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    got = {e.step: e.value for e in acc.Scalars("train/loss")}
    want = _jsonl_losses(run)
    assert got.keys() == want.keys() == {1, 2, 3}
    assert all(abs(got[s] - want[s]) < 1e-6 * max(1.0, abs(want[s])) for s in want)


def test_wandb_offline(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_corpus, run, "train.report_to=[wandb]"), log=lambda m: None)
    run_id = (run / "wandb_run_id.txt").read_text().strip()
    offline = list((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, sorted(p.name for p in (run / "wandb").iterdir())
    assert list(offline[0].glob("*.wandb")), "no W&B run file written"


def test_mlflow_local_store(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow-skinny has no SQL backend; a file store suffices
    run = tmp_path / "run"
    train(_cfg(tiny_model_dir, tiny_corpus, run, "train.report_to=[mlflow]", "train.tracking_project=csrl-test"),
          log=lambda m: None)  # fmt: skip
    run_id = (run / "mlflow_run_id.txt").read_text().strip()
    client = mlflow.tracking.MlflowClient(tracking_uri=store.as_uri())
    history = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    want = _jsonl_losses(run)
    assert history.keys() == want.keys()
    assert all(abs(history[s] - want[s]) < 1e-6 * max(1.0, abs(want[s])) for s in want)
    assert client.get_run(run_id).data.params["train.batch_size"] == "4"


def test_a_tracker_that_cannot_start_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    with pytest.raises(CsrlError, match="could not start the mlflow tracker"):
        open_trackers(["mlflow"], tmp_path, {}, project="x")


def test_missing_tracker_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_wandb(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "wandb" or name.startswith("wandb."):
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(CsrlError, match=r'pip install "csrl\[wandb\]"'):
        open_trackers(["wandb"], tmp_path, {}, project="x")
