"""``on_nonfinite=skip`` is bounded (``train.max_nonfinite_skips``), counted in the run state, and summarised;
an epoch without a batch is an error, not an endless loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import Tensor, nn

from csrl.errors import CsrlError, NonFiniteError
from csrl.losses.registry import _LOSSES, LossOutput, register_loss
from csrl.train.batches import TrainingData
from csrl.train.config import load_config
from csrl.train.loop import train
from csrl.train.state import RunState

_nan_calls: dict[str, object] = {"n": 0, "at": set()}  # the loss is NaN at these call numbers (1-based)

if "test-nan-at-calls" not in _LOSSES:

    @register_loss("test-nan-at-calls")
    class _NanAtCalls(nn.Module):
        def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
            _nan_calls["n"] = int(_nan_calls["n"]) + 1  # type: ignore[call-overload]
            loss = ((z1 - z2) ** 2).mean() + 1.0
            if _nan_calls["n"] in _nan_calls["at"]:  # type: ignore[operator]
                loss = loss * float("nan")
            return LossOutput(loss, {"x": loss.detach()})


def _nan_at(*calls: int, done: int = 0) -> None:
    _nan_calls["n"], _nan_calls["at"] = done, set(calls)


def _cfg(model: Path, corpus: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"model.model={model}", f"data.train_files=[{corpus}]", f"output_dir={out}", "train.batch_size=8",
            "train.max_steps=6", "train.eval_every=0", "train.checkpoint_every=2", "train.keep_checkpoints=10",
            "train.final_eval=false", "train.progress=false", "train.paradigm_every=0",
            "loss.name=test-nan-at-calls", "train.on_nonfinite=skip", *extra,
        ],
    )  # fmt: skip


def _trainer_state(run: Path, step: int) -> dict[str, object]:
    return json.loads((run / "checkpoints" / f"step-{step:07d}" / "trainer_state.json").read_text())


def test_consecutive_skips_stop_the_run_with_a_summary(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    _nan_at(4, 5, 6)
    cfg = _cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", "train.max_nonfinite_skips=3")
    with pytest.raises(NonFiniteError) as err:
        train(cfg)
    msg, hint = err.value.message, err.value.hint or ""
    assert "3 consecutive non-finite steps (4-6" in msg and "max_nonfinite_skips=3" in msg
    assert "3 non-finite step(s) skipped: steps 4-6" in msg
    assert "step-0000002" in hint  # the last checkpoint before the streak (step-4 was written during it)
    assert (tmp_path / "run" / "checkpoints" / "step-0000004").is_dir()
    skipped = [r["step"] for r in json.loads("[" + ",".join(
        (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) + "]") if "train/nonfinite_skipped" in r]  # fmt: skip
    assert skipped == [4, 5, 6]  # numbered like the other records of the step (and the checkpoints)


def test_scattered_skips_finish_and_are_counted_and_summarised(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    _nan_at(2, 3, 5)
    logged: list[str] = []
    res = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", "train.max_nonfinite_skips=3"), log=logged.append)
    assert res.steps == 6
    assert "3 non-finite step(s) skipped: steps 2-3, 5" in logged
    state = _trainer_state(tmp_path / "run", 6)
    assert (state["nonfinite_skips"], state["consecutive_skips"], state["nonfinite_steps"]) == (3, 0, [2, 3, 5])
    assert _trainer_state(tmp_path / "run", 4)["nonfinite_skips"] == 2


def test_skip_counts_resume_exactly(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    class Crash(Exception):
        pass

    def crash(info: object) -> None:
        if getattr(info, "step", 0) == 5:
            raise Crash

    _nan_at(3, 4, 5)  # a streak of 3, cut by the crash after step 5 (last checkpoint: step 4)
    cfg = _cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", "train.max_nonfinite_skips=4")
    with pytest.raises(Crash):
        train(cfg, callbacks=[crash])
    assert _trainer_state(tmp_path / "run", 4)["consecutive_skips"] == 2
    _nan_at(5, 6, done=4)  # the resumed run redoes step 5: two more in the streak make 4 in a row
    with pytest.raises(NonFiniteError, match=r"4 consecutive non-finite steps \(3-6.*4 non-finite step\(s\) skipped"):
        train(cfg, resume=True)


def test_old_checkpoint_state_loads_with_defaults() -> None:
    old = {"step": 4, "epoch": 0, "position": 4, "best_dev": None, "best_step": None}
    state = RunState.from_dict(old)
    assert (state.nonfinite_skips, state.consecutive_skips, state.nonfinite_steps, state.precision) == (0, 0, [], None)
    state.record_skip(5)
    assert RunState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_skip_summary_lists_the_last_steps() -> None:
    state = RunState()
    for s in [*range(1, 151), 160]:
        state.record_skip(s)
    assert len(state.nonfinite_steps) == 100
    assert state.skip_summary() == "151 non-finite step(s) skipped: steps ..., 52-150, 160"


def test_max_nonfinite_skips_must_be_positive(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="train.max_nonfinite_skips"):
        _cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", "train.max_nonfinite_skips=0")


def test_an_epoch_without_batches_is_an_error(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TrainingData, "steps_in_epoch", lambda self, epoch: 0)
    _nan_at()
    with pytest.raises(CsrlError, match="epoch 1 of the training data has no batch of 8"):
        train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "run"))
