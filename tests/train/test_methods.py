"""ESimCSE and SimCSE++ in the trainer (csrl.train.methods): short trainings, bit-identical resume, what is
refused, the recipes, and the gathered loss inputs under (faked) distributed training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from ddp_helpers import FakeDist
from safetensors.torch import load_file

import csrl.train.distributed as csrl_dist
from csrl.errors import CsrlError
from csrl.losses import build_loss
from csrl.models.encoder import Encoder
from csrl.train.callbacks import StepInfo
from csrl.train.config import load_config
from csrl.train.loop import train
from csrl.train.methods import Method, build_method, clean_embeddings, dropout_off
from csrl.train.step import Views, compute_loss

RECIPES = [Path(__file__).resolve().parents[2] / "configs" / "methods" / f"{n}.yaml" for n in ("esimcse", "simcsepp")]


def _cfg(model: Path, corpus: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"model.model={model}", f"data.train_files=[{corpus}]", f"output_dir={out}", "train.batch_size=8",
            "train.max_steps=3", "train.eval_every=0", "train.checkpoint_every=2", "train.keep_checkpoints=10",
            "train.final_eval=false", "train.progress=false", "train.lr=1e-3", "train.num_threads=1", *extra,
        ],
    )  # fmt: skip


def _tensors(folder: Path) -> dict[str, tuple[int, ...]]:
    return {
        f"{f.name}:{k}": tuple(v.shape) for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()
    }


def _state(run: Path, step: int) -> dict[str, Any]:
    blob: dict[str, Any] = torch.load(run / "checkpoints" / f"step-{step:07d}" / "state.pt", weights_only=False)
    return blob


# ----------------------------------------------------------------------------- ESimCSE
def test_esimcse_trains_with_a_queue_that_stays_out_of_the_model(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    res = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "e", "loss.name=esimcse", "loss.queue_ratio=2.5"))
    logged = [r for r in res.metrics if "train/loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    assert all("loss/esimcse" in r and not any(k.startswith("paradigm/") for k in r) for r in logged)
    queue = _state(tmp_path / "e", 3)["method"]["momentum"]["queue"]
    assert queue.shape == (20, 32)  # 2.5 x 8 rows of the 3 x 8 keys: the oldest 4 dropped
    momentum = _state(tmp_path / "e", 3)["method"]["momentum"]["encoder"]
    online = load_file(str(tmp_path / "e" / "checkpoints" / "step-0000003" / "model.safetensors"))
    assert momentum.keys() == online.keys()
    moved = [k for k in online if online[k].is_floating_point() and not torch.equal(online[k], momentum[k])]
    assert moved  # the EMA lags behind the online weights
    # the saved model is the online encoder alone: the same files and tensors as a plain InfoNCE run's
    train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "i", "train.max_steps=1"))
    assert _tensors(tmp_path / "e" / "best") == _tensors(tmp_path / "i" / "best")


class _Crash(Exception):
    pass


def test_esimcse_resume_is_bit_identical(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    """Crash after step 5 (last checkpoint: step 4, queue full and wrapped), resume: step 6 equals an uninterrupted
    run's, weights, momentum encoder and queue alike, and every step logs the same loss."""
    extra = ("loss.name=esimcse", "loss.queue_ratio=1.5", "loss.dup_rate=0.5", "train.max_steps=6")
    ref = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "a", *extra))

    def crash(info: StepInfo) -> None:
        if info.step == 5:
            raise _Crash

    with pytest.raises(_Crash):
        train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "b", *extra), callbacks=[crash])
    resumed = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "b", *extra), resume=True)
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step-0000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step-0000006" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (_state(tmp_path / r, 6)["method"]["momentum"] for r in ("a", "b"))
    assert ma["queue"].shape == (12, 32) and torch.equal(ma["queue"], mb["queue"])
    assert all(torch.equal(ma["encoder"][k], mb["encoder"][k]) for k in ma["encoder"])
    la = [(r["step"], r["train/loss"]) for r in ref.metrics if "train/loss" in r]
    lb = [(r["step"], r["train/loss"]) for r in resumed.metrics if "train/loss" in r]
    assert la == lb and len(la) == 6


def test_esimcse_without_queue_is_repetition_only(tiny_model_dir: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir))
    cfg = load_config(None, [f"model.model={tiny_model_dir}", "loss.name=esimcse", "loss.queue_ratio=0"])
    method = build_method(cfg, build_loss("esimcse", queue_ratio=0.0), enc)
    assert method.momentum is None and method.paradigm_applies and method.inputs.dup_rate == 0.32
    assert method.state_dict() is None


# ----------------------------------------------------------------------------- SimCSE++
def test_simcsepp_trains(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    res = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "s", "loss.name=simcsepp"))
    logged = [r for r in res.metrics if "train/loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3]
    for r in logged:
        assert {"loss/infonce", "loss/dcl"} <= set(r) and not any(k.startswith("paradigm/") for k in r)
        assert r["train/loss"] == pytest.approx(r["loss/infonce"] + 0.1 * r["loss/dcl"], rel=1e-5)
    assert "method" not in _state(tmp_path / "s", 2)  # nothing beyond the model to keep
    # DCL only (no clean view): an ordinary in-batch loss, with the paradigm statistics
    res = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "d", "loss.name=simcsepp", "loss.off_dropout=false",
                     "train.max_steps=1"))  # fmt: skip
    assert "paradigm/gd_mean" in res.metrics[0]


def test_the_clean_view_is_dropout_free_and_trains(tiny_model_dir: Path) -> None:
    torch.manual_seed(0)
    enc = Encoder.from_pretrained(model=str(tiny_model_dir))
    enc.train()
    features = enc.tokenize(["a cat", "two dogs run", "a cat", "two dogs run"], max_length=8)  # 2 views x 2
    a = clean_embeddings(enc, features, 2, autocast=_no_autocast)
    b = clean_embeddings(enc, features, 2, autocast=_no_autocast)
    assert a.shape == (2, 32) and torch.equal(a, b) and a.requires_grad
    assert enc.training and all(m.training for m in enc.backbone.modules())  # flags restored
    dropped = enc(features)[:2]
    assert not torch.allclose(dropped, a)  # the training forward has dropout
    method = Method(build_loss("simcsepp").step_inputs())
    extras = method.extra_views(enc, features, 2, autocast=_no_autocast)
    assert set(extras) == {"clean"} and torch.equal(extras["clean"], a)


def _no_autocast() -> Any:
    return torch.autocast("cpu", enabled=False)


def test_dropout_off_restores_mixed_flags() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5), torch.nn.Sequential(torch.nn.Dropout(0.5)))
    net.train()
    net[2].eval()
    with dropout_off(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, True, False, False]


# ----------------------------------------------------------------------------- refusals and recipes
def test_what_the_methods_refuse(tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    cases = [
        (("loss.name=simcsepp", "train.cache_chunk_size=4"), "GradCache"),
        (("loss.name=esimcse", "train.length_buckets=[8,16]", "data.max_length=16"), "longer than data.max_length"),
    ]
    for n, (extra, words) in enumerate(cases):
        with pytest.raises(CsrlError, match=words):
            train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / f"r{n}", *extra))
    triplets = tmp_path / "triplets.csv"
    triplets.write_text("sent0,sent1,hard_neg\n" + "".join(f"a{i} b,c{i} d,e{i} f\n" for i in range(20)))
    with pytest.raises(CsrlError, match="no hard-negative form"):
        train(_cfg(tiny_model_dir, triplets, tmp_path / "r3", "loss.name=esimcse"))
    # length buckets are fine without word repetition
    train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "ok", "loss.name=esimcse", "loss.dup_rate=0",
               "train.length_buckets=[8,16,32]", "train.max_steps=1"))  # fmt: skip


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipes_dry_run(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from csrl.cli.main import main

    assert main(["train", str(path), "--dry-run"]) == 0
    assert "validates" in capsys.readouterr().err
    cfg = load_config(path)
    assert cfg.loss.name == path.stem and cfg.model.model == "embedded:all-MiniLM-L6-v2"


# ----------------------------------------------------------------------------- faked collectives
@pytest.mark.parametrize("name", ["simcsepp", "esimcse"])
def test_gathered_inputs_give_the_full_batch_loss(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clean view is gathered like the other views (its rows stay aligned with their anchors); the queue is
    global already and is not gathered: each rank's shard loss is world x the full-batch loss, with its rows of
    the full-batch gradient (x world)."""
    world, local = 2, 4
    g = torch.Generator().manual_seed(0)
    full = [torch.randn(world * local, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    queue = torch.randn(5, 6, generator=g, dtype=torch.float64)
    loss_fn = build_loss(name)
    key = "clean" if name == "simcsepp" else "queue"
    leaves = [f.clone().requires_grad_(True) for f in full]
    extra = leaves[2] if key == "clean" else queue
    ref = loss_fn(leaves[0], leaves[1], **{key: extra}).total
    ref_grads = torch.autograd.grad(ref, leaves, allow_unused=True)
    for r in range(world):
        fake = FakeDist(r, world, full)
        monkeypatch.setattr(csrl_dist, "dist", fake)
        rows = slice(r * local, (r + 1) * local)
        shard = [f[rows].clone().requires_grad_(True) for f in full]
        views = Views(shard[0], shard[1], clean=shard[2]) if key == "clean" else Views(shard[0], shard[1], queue=queue)
        out = compute_loss(loss_fn, views)
        assert fake.calls == (3 if key == "clean" else 2)
        torch.testing.assert_close(out.total, world * ref.detach(), rtol=1e-12, atol=1e-12)
        grads = torch.autograd.grad(out.total, shard, allow_unused=True)
        for got, want in zip(grads, ref_grads, strict=True):
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got / world, want[rows], rtol=1e-10, atol=1e-12)
