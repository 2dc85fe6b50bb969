"""``precision: auto`` (bf16 where native, else fp32), bf16 detection both ways, the emulated-bf16 warning
once per process, fp16 refused on CPU; training records what ran."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from csrl.errors import CsrlError
from csrl.utils import precision as prec
from csrl.utils.precision import (
    EMULATED_BF16,
    PrecisionWarning,
    autocast_dtype,
    cpuinfo_has_bf16,
    native_bf16,
    resolve_precision,
)

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\nbogomips\t: 4000\n"
AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"


@pytest.fixture
def cpu_bf16(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``cpu_bf16(True/False)``: mock torch's CPU detection; ``cpu_bf16(None, cpuinfo)``: torch cannot say,
    ``/proc/cpuinfo`` holds ``cpuinfo``. The warn-once memory starts empty."""
    monkeypatch.setattr(prec, "_warned", set())

    def set_(found: bool | None, cpuinfo: str = "") -> None:
        monkeypatch.setattr(prec, "_torch_cpu_bf16", lambda: found)
        monkeypatch.setattr(prec, "_read_cpuinfo", lambda: cpuinfo)

    return set_


def test_cpuinfo_flags() -> None:
    assert cpuinfo_has_bf16(AVX512_BF16) and cpuinfo_has_bf16(AMX)
    assert not cpuinfo_has_bf16(AVX2_ONLY)
    assert not cpuinfo_has_bf16("flags\t\t: avx512_bf16x notamx_bf16\n")  # whole flags only
    assert not cpuinfo_has_bf16("model name\t: avx512_bf16 in the name\nflags\t\t: avx2\n")  # the flags line only
    assert not cpuinfo_has_bf16("")


def test_native_bf16_uses_torch_then_cpuinfo(cpu_bf16) -> None:  # type: ignore[no-untyped-def]
    cpu_bf16(True, AVX2_ONLY)  # torch's answer wins over cpuinfo
    assert native_bf16("cpu")
    cpu_bf16(False, AVX512_BF16)
    assert not native_bf16(torch.device("cpu"))
    cpu_bf16(None, AVX512_BF16)  # an older torch: /proc/cpuinfo decides
    assert native_bf16("cpu")
    cpu_bf16(None, AVX2_ONLY)
    assert not native_bf16("cpu")
    cpu_bf16(None, "")  # no /proc/cpuinfo (macOS, Windows): not native
    assert not native_bf16("cpu")


def test_auto_resolves_to_bf16_only_where_native(cpu_bf16) -> None:  # type: ignore[no-untyped-def]
    cpu_bf16(True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert autocast_dtype("auto", "cpu") is torch.bfloat16
    cpu_bf16(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        assert resolve_precision("auto", "cpu") == "fp32"
        assert autocast_dtype("auto", "cpu") is None
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_auto_on_cuda_asks_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda:0") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert resolve_precision("auto", "cuda") == "fp32"
    assert not native_bf16("mps")


def test_explicit_bf16_on_an_emulating_cpu_warns_once(cpu_bf16) -> None:  # type: ignore[no-untyped-def]
    cpu_bf16(False)
    with pytest.warns(PrecisionWarning) as record:
        assert resolve_precision("bf16", "cpu") == "bf16"  # allowed, just slow
        assert autocast_dtype("bf16", "cpu") is torch.bfloat16
        resolve_precision("bf16", torch.device("cpu"))
    assert len(record) == 1
    msg = str(record[0].message)
    assert msg == EMULATED_BF16 and "10-25x slower than fp32; use precision=auto or fp32" in msg
    cpu_bf16(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16", "cpu") == "bf16"  # native: no warning


def test_fp16_on_cpu_and_unknown_names_are_refused(cpu_bf16) -> None:  # type: ignore[no-untyped-def]
    cpu_bf16(True)
    with pytest.raises(CsrlError, match="needs a CUDA device") as err:
        autocast_dtype("fp16", "cpu", setting="--precision")
    assert "--precision=auto" in (err.value.hint or "")
    with pytest.raises(CsrlError, match="must be one of auto, fp32, bf16, fp16, got 'fp8'"):
        resolve_precision("fp8", "cpu", setting="train.precision")


def test_this_machine_torch_and_cpuinfo_agree() -> None:
    found = prec._torch_cpu_bf16()
    text = prec._read_cpuinfo()
    if found is None or "flags" not in text:
        pytest.skip("needs torch's CPU feature detection and a Linux /proc/cpuinfo")
    assert found == cpuinfo_has_bf16(text)


def test_training_defaults_to_auto_and_records_what_ran(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, cpu_bf16
) -> None:  # type: ignore[no-untyped-def]
    from csrl.train.config import load_config
    from csrl.train.loop import train

    logged: list[str] = []
    for native, expected in ((False, "fp32"), (True, "bf16")):
        cpu_bf16(native)
        out = tmp_path / expected
        cfg = load_config(
            None,
            [f"model.model={tiny_model_dir}", f"data.train_files=[{tiny_corpus}]", f"output_dir={out}",
             "train.batch_size=8", "train.max_steps=2", "train.eval_every=0", "train.final_eval=false",
             "train.progress=false", "train.device=cpu"],
        )  # fmt: skip
        assert cfg.train.precision == "auto"
        with warnings.catch_warnings():
            warnings.simplefilter("error", PrecisionWarning)
            train(cfg, log=logged.append)
        assert json.loads((out / "config.json").read_text())["train"]["precision"] == "auto"
        state = json.loads((out / "checkpoints" / "step-0000002" / "trainer_state.json").read_text())
        assert state["precision"] == expected
        assert any(line.startswith("training ") and f"{expected} (auto), cpu" in line for line in logged)
