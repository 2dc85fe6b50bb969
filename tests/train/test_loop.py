from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from csrl.errors import CsrlError, NonFiniteError
from csrl.losses.registry import _LOSSES, LossOutput, register_loss
from csrl.train.callbacks import StepInfo
from csrl.train.config import load_config
from csrl.train.loop import train


def _cfg(model: Path, corpus: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"model.model={model}",
            f"data.train_files=[{corpus}]",
            f"output_dir={out}",
            "train.batch_size=8",
            "train.max_steps=6",
            "train.eval_every=0",
            "train.checkpoint_every=2",
            "train.keep_checkpoints=10",
            "train.final_eval=false",
            "train.progress=false",
            "train.lr=1e-3",
            *extra,
        ],
    )


def test_trains_and_logs(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    res = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "run"))
    steps = [r["step"] for r in res.metrics if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    first = res.metrics[0]
    assert {"train/loss", "train/lr", "loss/infonce", "paradigm/gd_mean"} <= set(first)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == steps
    assert (tmp_path / "run" / "best" / "modules.json").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["batch_size"] == 8


class _Crash(Exception):
    pass


@pytest.mark.parametrize("sampling", [(), ("data.group_by_length=3",)], ids=["shuffled", "length-grouped"])
def test_resume_after_crash_is_bit_identical(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, sampling: tuple[str, ...]
) -> None:
    ref = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "a", *sampling))

    def crash(info: StepInfo) -> None:
        if info.step == 5:
            raise _Crash

    with pytest.raises(_Crash):
        train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "b", *sampling), callbacks=[crash])
    resumed = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "b", *sampling), resume=True)
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step-0000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step-0000006" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the metrics log has every step exactly once, with the same losses
    la = [(r["step"], r["train/loss"]) for r in ref.metrics if "train/loss" in r]
    lb = [(r["step"], r["train/loss"]) for r in resumed.metrics if "train/loss" in r]
    assert la == lb


_calls = {"n": 0}
if "test-nan-at-3" not in _LOSSES:

    @register_loss("test-nan-at-3")
    class _NanAt3(nn.Module):
        def forward(self, z1: Tensor, z2: Tensor, hard_neg: Tensor | None = None) -> LossOutput:
            _calls["n"] += 1
            loss = ((z1 - z2) ** 2).mean() + 1.0
            if _calls["n"] == 3:
                loss = loss * float("nan")
            return LossOutput(loss, {"x": loss.detach()})


def test_nan_stops_at_the_step_and_names_the_checkpoint(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    _calls["n"] = 0
    cfg = _cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", "loss.name=test-nan-at-3", "train.paradigm_every=0")
    with pytest.raises(NonFiniteError) as err:
        train(cfg)
    # steps are numbered as in metrics.jsonl and the checkpoint names: the third step is step 3
    assert "at step 3" in err.value.message and "step-0000002" in (err.value.hint or "")
    for ck in (tmp_path / "run" / "checkpoints").iterdir():
        for v in load_file(str(ck / "model.safetensors")).values():
            assert torch.isfinite(v).all()
    assert not (tmp_path / "run" / "best").exists()


def test_nan_skip_mode_continues(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    _calls["n"] = 0
    cfg = _cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", "loss.name=test-nan-at-3", "train.paradigm_every=0",
               "train.on_nonfinite=skip")  # fmt: skip
    res = train(cfg)
    assert res.steps == 6
    assert any(r.get("train/nonfinite_skipped") == 1.0 for r in res.metrics)
    for v in load_file(str(tmp_path / "run" / "checkpoints" / "step-0000006" / "model.safetensors")).values():
        assert torch.isfinite(v).all()


def test_grad_accumulation_with_in_batch_negatives_is_refused(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    with pytest.raises(CsrlError, match="cache_chunk_size"):
        train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", "train.grad_accum_steps=2"))


def test_batch_larger_than_corpus(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(CsrlError, match="records but one global batch needs"):
        train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "run", "train.batch_size=100000"))


def test_cached_batches_match_uncached_and_log_same_loss(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    """With dropout off, a GradCache run follows the uncached run step for step."""
    from transformers import AutoConfig

    cfg_dir = tmp_path / "nodrop"
    import shutil

    shutil.copytree(tiny_model_dir, cfg_dir)
    c = AutoConfig.from_pretrained(str(cfg_dir))
    c.hidden_dropout_prob = 0.0
    c.attention_probs_dropout_prob = 0.0
    c.save_pretrained(str(cfg_dir))
    a = train(_cfg(cfg_dir, tiny_corpus, tmp_path / "a"))
    b = train(_cfg(cfg_dir, tiny_corpus, tmp_path / "b", "train.cache_chunk_size=3"))
    la = [r["train/loss"] for r in a.metrics if "train/loss" in r]
    lb = [r["train/loss"] for r in b.metrics if "train/loss" in r]
    assert all(math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-5) for x, y in zip(la, lb, strict=True))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_grads_finite_finds_one_bad_entry(bad: float) -> None:
    from csrl.train.step import grads_finite

    params = [nn.Parameter(torch.zeros(3, 4)), nn.Parameter(torch.zeros(5)), nn.Parameter(torch.zeros(2))]
    for p in params[:2]:
        p.grad = torch.randn_like(p) * 1e30  # huge but finite: a 2-norm would overflow, the max does not
    assert grads_finite(params)  # the third has no gradient
    assert params[1].grad is not None
    params[1].grad[3] = bad
    assert not grads_finite(params)
