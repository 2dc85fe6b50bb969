"""train.compile: the setting (old true/false configs), length buckets, the compiled backbone and its dropout.

Compiled paths use the ``aot_eager`` backend: it traces and compiles like inductor (dynamo, AOT autograd, static
shapes) but runs torch's own kernels, so it compiles in seconds on a CPU and draws dropout masks from torch's
generator exactly as eager code does, which makes exact comparisons with eager runs possible.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder, EncoderConfig
from csrl.train import compile as compile_mod
from csrl.train.batches import open_training_data, pad_to_bucket
from csrl.train.compile import Compilation, compilation, compile_backbone, default_length_buckets, mark_step
from csrl.train.config import build_config, load_config, resume_changes
from csrl.train.loop import train

SENTENCES = ["the cat sat on the mat", "a dog", "red blue green house tree runs fast and slow", "big"]


def _cfg(*extra: str) -> Any:
    return load_config(None, list(extra))


def _run_cfg(model: Path, corpus: Path, out: Path, *extra: str) -> Any:
    return _cfg(
        f"model.model={model}", f"data.train_files=[{corpus}]", f"output_dir={out}", "train.batch_size=8",
        "train.max_steps=4", "train.eval_every=0", "train.checkpoint_every=0", "train.final_eval=false",
        "train.progress=false", "train.lr=1e-3", "train.report_to=[]", "train.paradigm_every=0", *extra,
    )  # fmt: skip


@pytest.fixture
def fresh_dynamo() -> Iterator[None]:
    """Compiled code is cached per code object (BertModel.forward) across tests: start and end clean."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _frames_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"])


def _encoder(model: Path, pooler: str = "mean") -> Encoder:
    return Encoder.from_pretrained(EncoderConfig(model=str(model), pooler=pooler))


# ----------------------------------------------------------------------------- the setting
@pytest.mark.parametrize(("given", "read"), [("true", "default"), ("false", "off"), ("reduce-overhead", "reduce-overhead"),
                                             ("off", "off"), ("default", "default")])  # fmt: skip
def test_compile_setting_reads_old_booleans(given: str, read: str) -> None:
    assert _cfg(f"train.compile={given}").train.compile == read


def test_unknown_compile_mode_is_refused() -> None:
    with pytest.raises(CsrlError, match="train.compile must be one of off, default, reduce-overhead"):
        _cfg("train.compile=max-autotune")
    with pytest.raises(CsrlError, match="train.compile_backend"):
        _cfg("train.compile_backend=tvm")


@pytest.mark.parametrize("old", [False, True])
def test_old_saved_config_loads_and_resumes_without_a_change(old: bool) -> None:
    """A run saved before compile was a choice (``"compile": false/true`` in config.json) resumes under the
    equivalent new value as no change at all, and under another mode as an allowed (recorded) change."""
    saved = _cfg().to_dict()
    saved["train"]["compile"] = old
    del saved["train"]["compile_backend"], saved["train"]["length_buckets"]  # keys the old run did not have
    rebuilt = build_config(saved)
    assert rebuilt.train.compile == ("default" if old else "off")
    same = _cfg(f"train.compile={'default' if old else 'off'}")
    assert resume_changes(rebuilt.to_dict(), same.to_dict()) == ({}, {})
    refused, allowed = resume_changes(rebuilt.to_dict(), _cfg("train.compile=reduce-overhead").to_dict())
    assert refused == {} and set(allowed) == {"train.compile"}


def test_reduce_overhead_with_gradcache_is_refused() -> None:
    with pytest.raises(CsrlError, match="cache_chunk_size") as err:
        _cfg("train.compile=reduce-overhead", "train.cache_chunk_size=16")
    assert "train.compile=default" in (err.value.hint or "")
    assert _cfg("train.compile=default", "train.cache_chunk_size=16").train.cache_chunk_size == 16


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["train.length_buckets=[16,40]"], "up to data.max_length=32"),
        (["train.compile=reduce-overhead", "data.max_length=16", "train.length_buckets=[8,32]"], "up to data.max"),
        (["train.compile=reduce-overhead", "train.length_buckets=[16,16,32]"], "increasing"),
        (["train.compile=reduce-overhead", "train.length_buckets=[24,16,32]"], "increasing"),
        (["train.compile=reduce-overhead", "train.length_buckets=[]"], "increasing"),
        (["train.compile=reduce-overhead", "train.length_buckets=[0,32]"], "must be >= 1"),
    ],
)
def test_bad_length_buckets_are_refused(overrides: list[str], match: str) -> None:
    with pytest.raises(CsrlError, match=match):
        _cfg(*overrides)


def test_length_buckets_end_at_max_length_in_any_mode() -> None:
    for mode in ("off", "default", "reduce-overhead"):
        for given in ("[5,20]", "[5]"):
            cfg = _cfg(f"train.compile={mode}", "data.max_length=20", f"train.length_buckets={given}")
            assert compile_mod.length_buckets(cfg) == (5, 20)
    assert compile_mod.length_buckets(_cfg("train.compile=reduce-overhead")) == (8, 16, 24, 32)
    assert compile_mod.length_buckets(_cfg("train.compile=default")) is None
    assert compile_mod.length_buckets(_cfg()) is None


def test_default_length_buckets() -> None:
    assert default_length_buckets(32) == (8, 16, 24, 32)
    assert default_length_buckets(128) == (16, 32, 48, 64, 80, 96, 112, 128)
    assert default_length_buckets(100) == (16, 32, 48, 64, 80, 96, 100)
    assert default_length_buckets(2) == (2,)
    for m in range(2, 1100):
        b = default_length_buckets(m)
        step = 8 * -(-m // 64)
        assert b[-1] == m and len(b) <= 8, m
        assert all(x % step == 0 for x in b[:-1]) and all(0 < y - x <= step for x, y in zip((0, *b), b)), m


# ----------------------------------------------------------------------------- bucket padding
def test_pad_to_bucket_widens_to_the_smallest_bucket_that_fits(tiny_model_dir: Path) -> None:
    enc = _encoder(tiny_model_dir)
    buckets = (4, 8, 12, 32)
    pad = int(enc.tokenizer.pad_token_id)
    for n in range(1, len(SENTENCES) + 1):
        feats = enc.tokenize(SENTENCES[:n], max_length=32)
        width = feats["input_ids"].shape[1]
        out = pad_to_bucket(feats, buckets, pad_id=pad)
        target = min(b for b in buckets if b >= width)
        assert set(out) == set(feats)
        for k, v in out.items():
            assert v.shape == (n, target) and v.dtype == feats[k].dtype
            assert torch.equal(v[:, :width], feats[k])  # the tokenizer's columns, untouched
        assert (out["input_ids"][:, width:] == pad).all()
        assert (out["attention_mask"][:, width:] == 0).all() and (out["token_type_ids"][:, width:] == 0).all()


def test_pad_to_bucket_edges(tiny_model_dir: Path) -> None:
    enc = _encoder(tiny_model_dir)
    feats = enc.tokenize(SENTENCES, max_length=32)
    width = feats["input_ids"].shape[1]
    assert pad_to_bucket(feats, (width,), pad_id=0) is feats  # already a bucket's length
    with pytest.raises(ValueError, match="longer than the largest length bucket"):
        pad_to_bucket(feats, (width - 1,), pad_id=0)
    with pytest.raises(ValueError, match="special_tokens_mask"):
        pad_to_bucket({**feats, "special_tokens_mask": feats["attention_mask"]}, (64,), pad_id=0)


def test_training_features_take_only_bucket_shapes(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    """Every batch of an epoch, the last one included, has the same rows and a bucket's length; with the
    buckets, the length is the smallest bucket holding the batch's longest row (the unpadded width)."""
    extra = ("train.compile=reduce-overhead", "data.max_length=12", "train.length_buckets=[6,9,12]")
    cfg = _run_cfg(tiny_model_dir, tiny_corpus, tmp_path, *extra, "train.batch_size=4")
    data = open_training_data(cfg, None, rank=0, world_size=1)
    plain = open_training_data(_run_cfg(tiny_model_dir, tiny_corpus, tmp_path, "data.max_length=12",
                                        "train.batch_size=4"), None, rank=0, world_size=1)  # fmt: skip
    assert data.length_buckets == (6, 9, 12) and plain.length_buckets is None
    enc = _encoder(tiny_model_dir)
    widths = set()
    steps = data.steps_in_epoch(0)
    assert steps == data.n_records // 4 and steps > 1
    for position in range(steps):
        records = data.records(0, position, step=position)
        feats = data.features(records, enc, 12)
        rows, width = feats["input_ids"].shape
        natural = plain.features(records, enc, 12)["input_ids"].shape[1]
        assert rows == 4 * 2 and width == min(b for b in (6, 9, 12) if b >= natural)
        widths.add(width)
    assert widths <= {6, 9, 12} and len(widths) >= 2  # the corpus really spans buckets


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("pooler", ["mean", "cls", "max", "lasttoken", "weightedmean", "last2_avg"])
def test_bucket_padding_leaves_eval_embeddings_unchanged(tiny_model_dir: Path, pooler: str, side: str) -> None:
    enc = _encoder(tiny_model_dir, pooler).eval()
    enc.tokenizer.padding_side = side
    feats = enc.tokenize(SENTENCES, max_length=32)
    padded = pad_to_bucket(feats, (feats["input_ids"].shape[1] + 13,), pad_id=int(enc.tokenizer.pad_token_id))
    with torch.no_grad():
        a, b = enc(feats), enc(padded)
        one = torch.cat([enc(enc.tokenize([s], max_length=32)) for s in SENTENCES]) if side == "right" else a
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    torch.testing.assert_close(b, one, rtol=0, atol=1e-5)  # and each sentence alone, without any padding


# ----------------------------------------------------------------------------- the compiled backbone
def test_reduce_overhead_on_cpu_compiles_without_cuda_graphs(tiny_model_dir: Path, fresh_dynamo: None) -> None:
    enc = _encoder(tiny_model_dir)
    keys = list(enc.state_dict())
    cfg = _cfg("train.compile=reduce-overhead", "train.compile_backend=aot_eager")
    with pytest.warns(UserWarning, match="CUDA graphs need a CUDA device"):
        info = compile_backbone(enc, cfg, torch.device("cpu"))
    assert info is not None and not info.cuda_graphs and info.buckets == (8, 16, 24, 32)
    assert compilation(enc) is info
    assert list(enc.state_dict()) == keys  # checkpoints of compiled and eager runs are interchangeable
    assert compile_backbone(enc, _cfg(), torch.device("cpu")) is None  # off: nothing to do


def test_compiled_training_forward_has_fresh_dropout_per_view_and_step(
    tiny_model_dir: Path, fresh_dynamo: None
) -> None:
    """Two views of the same sentences (one forward, like unsupervised SimCSE) get different masks, the next
    step different ones again, and for the same RNG state exactly the masks eager code draws."""
    enc = _encoder(tiny_model_dir).train()
    eager = _encoder(tiny_model_dir).train()
    cfg = _cfg("train.compile=reduce-overhead", "train.compile_backend=aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        compile_backbone(enc, cfg, torch.device("cpu"))
    feats = pad_to_bucket(enc.tokenize(SENTENCES + SENTENCES, max_length=32), (8, 16, 24, 32), pad_id=0)
    before = _frames_compiled()
    torch.manual_seed(3)
    z = enc(feats)
    assert _frames_compiled() > before  # the compiled path ran
    z1, z2 = z.chunk(2)
    assert not torch.allclose(z1, z2, atol=1e-4)  # dropout differs between the two views of each row
    z_next = enc(feats)
    assert not torch.allclose(z_next, z, atol=1e-4)  # and between steps
    torch.manual_seed(3)
    torch.testing.assert_close(enc(feats), z, rtol=0, atol=0)  # the same generator state: the same masks
    torch.manual_seed(3)
    torch.testing.assert_close(eager(feats), z, rtol=0, atol=0)  # aot_eager draws exactly eager's masks
    enc.eval()
    compiled = _frames_compiled()
    with torch.no_grad():
        e = enc(enc.tokenize(SENTENCES[:3], max_length=32))
    assert _frames_compiled() == compiled  # evaluation (unbucketed shapes) runs eagerly
    torch.testing.assert_close(e, eager.eval()(eager.tokenize(SENTENCES[:3], max_length=32)), rtol=0, atol=0)


def test_mark_step_marks_only_cuda_graph_steps(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(1))
    enc = _encoder(tiny_model_dir)
    mark_step(enc)  # eager
    info = Compilation("reduce-overhead", "inductor", False, (32,), enc.backbone.forward)
    setattr(enc.backbone, "_csrl_compilation", info)
    mark_step(enc)  # compiled, no CUDA graphs
    assert calls == []
    setattr(
        enc.backbone, "_csrl_compilation", Compilation("reduce-overhead", "inductor", True, (32,), info.eager_forward)
    )
    mark_step(enc)
    mark_step(torch.nn.Module())  # not an encoder: nothing to mark
    assert calls == [1]


def _losses(res: Any) -> list[float]:
    return [r["train/loss"] for r in res.metrics if "train/loss" in r]


def test_reduce_overhead_training_follows_eager_with_the_same_buckets(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, fresh_dynamo: None
) -> None:
    """aot_eager consumes the generator as eager code does, so a compiled run with buckets and an eager run with
    the same buckets take the same steps, bit for bit; compiled graphs stay within one per bucket.

    In fp32 only: under bf16 autocast the forwards still agree bit for bit, but the backward of dropout does not.
    Eager CPU dropout multiplies by a bf16 noise tensor holding 1/(1-p) rounded to bf16 (1.109375), and its
    backward multiplies by that tensor again; the traced graph calls ``native_dropout_backward`` with the fp32
    scale (1.1111). The gradients differ at bf16 rounding, and Adam's first steps turn sign flips of near-zero
    gradient entries into +-lr updates (losses ~1e-3 apart from the second step on)."""
    from torch._dynamo.utils import counters

    extra = ("train.compile_backend=aot_eager", "data.max_length=16", "train.length_buckets=[10,13]",
             "train.precision=fp32")  # fmt: skip
    before = int(counters["stats"]["unique_graphs"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        compiled = train(_run_cfg(tiny_model_dir, tiny_corpus, tmp_path / "compiled", "train.compile=reduce-overhead",
                                  *extra), log=lambda m: None)  # fmt: skip
    assert 1 <= int(counters["stats"]["unique_graphs"]) - before <= 3
    eager = train(_run_cfg(tiny_model_dir, tiny_corpus, tmp_path / "eager", *extra), log=lambda m: None)  # compile=off
    assert len(_losses(compiled)) == 4
    assert _losses(compiled) == _losses(eager)
    unbucketed = train(
        _run_cfg(tiny_model_dir, tiny_corpus, tmp_path / "plain", *extra[:2], extra[3]), log=lambda m: None
    )
    assert _losses(unbucketed)[1:] != _losses(eager)[1:]  # other shapes draw other masks: the comparison can fail


def test_default_mode_follows_eager(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path, fresh_dynamo: None
) -> None:
    """``train.compile=default`` (old ``true``): no buckets, and with aot_eager in fp32 the eager run's steps."""
    extra = ("train.compile_backend=aot_eager", "data.max_length=16", "train.precision=fp32")
    before = _frames_compiled()
    compiled = train(
        _run_cfg(tiny_model_dir, tiny_corpus, tmp_path / "c", "train.compile=true", *extra), log=lambda m: None
    )
    assert _frames_compiled() > before
    eager = train(_run_cfg(tiny_model_dir, tiny_corpus, tmp_path / "e", *extra), log=lambda m: None)
    assert len(_losses(compiled)) == 4 and _losses(compiled) == _losses(eager)


@pytest.mark.slow
def test_inductor_dropout_is_fresh_per_view_and_step(tiny_model_dir: Path, fresh_dynamo: None) -> None:
    """Inductor draws dropout from its own Philox stream (seeded from torch's generator at each call): not eager's
    masks, but fresh ones per view and per step; without dropout it computes eager's function. About a minute
    of compilation on a CPU (less with inductor's cache warm)."""
    enc = _encoder(tiny_model_dir).train()
    eager = _encoder(tiny_model_dir).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        compile_backbone(enc, _cfg("train.compile=reduce-overhead"), torch.device("cpu"))
    feats = pad_to_bucket(enc.tokenize(SENTENCES + SENTENCES, max_length=32), (8, 16, 24, 32), pad_id=0)
    with torch.no_grad():
        z = enc(feats)
        z1, z2 = z.chunk(2)
        assert not torch.allclose(z1, z2, atol=1e-4)
        assert not torch.allclose(enc(feats), z, atol=1e-4)
        torch.manual_seed(3)
        a = enc(feats)
        torch.manual_seed(3)
        torch.testing.assert_close(enc(feats), a, rtol=0, atol=0)  # seeded from torch's generator
        for module in (*enc.modules(), *eager.modules()):
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        torch.testing.assert_close(enc(feats), eager(feats), rtol=1e-4, atol=1e-5)
