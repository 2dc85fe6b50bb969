"""The on-device non-finite guard: exact skips inside fused AdamW, consecutive counts, the sticky halt, and a
training step that reads nothing back from the device."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from csrl.train import loop
from csrl.train.config import load_config
from csrl.train.guard import GRADIENT, LOSS, OK, DeviceGuard, HostGuard

NAN = float("nan")


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]


def _grads(k: int, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + k)
    return [torch.randn(p.shape, generator=g) for p in params]


def _run(
    schedule: list[str], *, stop: bool, max_skips: int = 20
) -> tuple[list[torch.nn.Parameter], torch.optim.Optimizer, list[tuple[int, int]]]:
    """Steps of fused AdamW under the device guard; ``schedule[k]``: "ok", "nan-grad" or "nan-loss"."""
    params = _params()
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.01, fused=True)
    guard = DeviceGuard(torch.device("cpu"), stop=stop, max_skips=max_skips)
    for k, kind in enumerate(schedule):
        for p, g in zip(params, _grads(k, params), strict=True):
            p.grad = g.clone()
        if kind == "nan-grad":
            params[1].grad[3] = NAN  # type: ignore[index]
        loss = torch.tensor(NAN if kind == "nan-loss" else 1.0)
        guard.check(loss, params, opt, k + 1)
        opt.step()
    return params, opt, guard.settle(len(schedule)).steps


def _reference(applied: list[int]) -> list[torch.nn.Parameter]:
    """Plain (unfused, unguarded) AdamW given only the gradients of the ``applied`` steps (0-based)."""
    params = _params()
    opt = torch.optim.AdamW(params, lr=0.1, weight_decay=0.01)
    for k in applied:
        for p, g in zip(params, _grads(k, params), strict=True):
            p.grad = g.clone()
        opt.step()
    return params


def _close(a: list[torch.nn.Parameter], b: list[torch.nn.Parameter]) -> bool:
    return all(torch.allclose(x, y, atol=1e-6, rtol=1e-6) for x, y in zip(a, b, strict=True))


def test_skip_mode_drops_exactly_the_nonfinite_steps() -> None:
    params, opt, codes = _run(["ok", "nan-grad", "ok", "nan-loss", "ok"], stop=False)
    assert codes == [(1, OK), (2, GRADIENT), (3, OK), (4, LOSS), (5, OK)]
    assert _close(params, _reference([0, 2, 4]))  # as if steps 2 and 4 never happened
    assert not _close(params, _reference([0, 1, 2, 3, 4]))  # the comparison can fail
    assert float(opt.state[params[0]]["step"]) == 3.0  # Adam's bias correction counts applied steps only


def test_stop_mode_freezes_at_the_last_finite_state() -> None:
    params, _, codes = _run(["ok", "ok", "nan-grad", "ok", "ok"], stop=True)
    assert [c for _, c in codes] == [OK, OK, GRADIENT, OK, OK]  # the host learns it late ...
    assert _close(params, _reference([0, 1]))  # ... but nothing after the first non-finite step was applied


def test_consecutive_skips_halt_at_the_bound() -> None:
    params, _, _ = _run(["ok", "nan-loss", "nan-loss", "ok", "ok"], stop=False, max_skips=2)
    assert _close(params, _reference([0]))  # halted after 2 in a row: the finite steps 4 and 5 are dropped too
    params, _, _ = _run(["ok", "nan-loss", "ok", "nan-loss", "ok"], stop=False, max_skips=2)
    assert _close(params, _reference([0, 2, 4]))  # a finite step ends the streak


def test_settle_reads_only_up_to_the_step_asked() -> None:
    guard = DeviceGuard(torch.device("cpu"), stop=False, max_skips=5)
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([p], fused=True)
    for step in (1, 2, 3):
        p.grad = torch.ones(2)
        guard.check(torch.tensor(1.0), [p], opt, step)
    assert guard.settle(2).steps == [(1, OK), (2, OK)]
    assert guard.settle(2).steps == []
    assert guard.settle(3).steps == [(3, OK)]


def test_host_guard_codes() -> None:
    p = torch.nn.Parameter(torch.ones(2))
    guard = HostGuard(scaler=False)
    p.grad = torch.tensor([1.0, float("inf")])
    guard.check(torch.tensor(1.0), [p], torch.optim.AdamW([p]), 1)
    assert guard.must_settle() and guard.settle(1).steps == [(1, GRADIENT)]
    fp16 = HostGuard(scaler=True)  # the loss scaler owns gradient overflow
    fp16.check(torch.tensor(1.0), [p], torch.optim.AdamW([p]), 1)
    assert not fp16.must_settle()


# ----------------------------------------------------------------------------- no reads in the step
_READS = ("__bool__", "__float__", "__int__", "item", "tolist", "__index__")


def _count_reads(monkeypatch: pytest.MonkeyPatch, inside: Callable[[], bool], seen: list[str]) -> None:
    for name in _READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor, *a: Any, _original: Any = original, _name: str = name, **k: Any) -> Any:
            frame = traceback.extract_stack(limit=2)[0]  # the caller
            # transformers' BERT reads its attention mask once per forward (masking_utils: skip the mask when
            # nothing is padded); the bare PyTorch loop pays that too. csrl's own code reads nothing.
            if inside() and f"{os.sep}csrl{os.sep}" in frame.filename:
                seen.append(f"{_name} at {frame.filename}:{frame.lineno}")
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)


def test_training_steps_read_nothing_back(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between settle points the trainer never waits for the device: no tensor is read on the host inside
    ``training_step`` (embed, loss, backward, guard, update), nor when a step is logged."""
    state = {"inside": False}
    seen: list[str] = []
    for name in ("training_step", "log_step"):
        original = getattr(loop, name)

        def traced(*a: Any, _original: Any = original, **k: Any) -> Any:
            state["inside"] = True
            try:
                return _original(*a, **k)
            finally:
                state["inside"] = False

        monkeypatch.setattr(loop, name, traced)
    _count_reads(monkeypatch, lambda: state["inside"], seen)
    cfg = load_config(None, [
        f"model.model={tiny_model_dir}", f"data.train_files=[{tiny_corpus}]", f"output_dir={tmp_path / 'run'}",
        "train.batch_size=8", "train.max_steps=4", "train.eval_every=0", "train.checkpoint_every=0",
        "train.final_eval=false", "train.progress=false", "train.precision=fp32", "train.max_grad_norm=1.0",
    ])  # fmt: skip
    res = loop.train(cfg, log=lambda s: None)
    assert res.steps == 4 and not seen, seen
    logged = [r for r in res.metrics if "train/loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert all(r["paradigm/gd_mean"] == r["paradigm/gd_mean"] for r in logged)  # read later, and not NaN
