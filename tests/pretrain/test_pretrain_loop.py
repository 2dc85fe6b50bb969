"""``csrl pretrain`` end to end on a tiny model: what it logs, a bit-identical resume after a crash, the
folder it owns, and a saved model that transformers and csrl load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pretrain_runs import tiny_config
from safetensors.torch import load_file

from csrl.errors import CsrlError
from csrl.pretrain.loop import PretrainResult, pretrain


def test_logs_mlm_loss_heldout_accuracy_and_geometry(tiny_mlm_run: PretrainResult) -> None:
    records = [json.loads(x) for x in (tiny_mlm_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "mlm/loss" in r] == [1, 2, 3]
    held = [r for r in records if "mlm/accuracy" in r]
    assert [r["step"] for r in held] == [3]
    assert (
        0.0 <= held[0]["mlm/accuracy"] <= 1.0 and held[0]["mlm/heldout_loss"] > 0 and held[0]["mlm/heldout_masked"] > 0
    )
    geometry = [r["step"] for r in records if any(k.startswith("geometry/") for k in r)]
    assert geometry == [0, 3]  # the untrained encoder, then after step 3
    assert all(r["mlm/loss"] > 0 for r in records if "mlm/loss" in r)
    assert tiny_mlm_run.heldout == {k: held[0][k] for k in ("mlm/accuracy", "mlm/heldout_loss")}


def test_the_saved_model_loads_with_transformers_and_csrl(tiny_mlm_run: PretrainResult) -> None:
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    from csrl.models.encoder import Encoder

    path = tiny_mlm_run.model_dir
    assert path is not None and (path / "README.md").exists()
    mlm = AutoModelForMaskedLM.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.model_max_length == 64  # the model's positions
    saved = load_file(str(tiny_mlm_run.run_dir / "checkpoints" / "step-0000003" / "model.safetensors"))
    for k, v in encoder.state_dict().items():
        if f"bert.{k}" in saved:
            assert torch.equal(v, saved[f"bert.{k}"]), k
    assert torch.equal(mlm.cls.predictions.transform.dense.weight, saved["cls.predictions.transform.dense.weight"])
    enc = Encoder.from_pretrained(model=str(path), pooler="mean")
    emb = enc.encode(["the cat sat on a mat", "a red house"])
    assert emb.shape == (2, 32)


def test_resume_after_crash_is_bit_identical(tiny_corpus: Path, tmp_path: Path) -> None:
    steps = ("train.max_steps=4", "train.eval_every=2")
    ref = pretrain(tiny_config(tiny_corpus, tmp_path / "a", *steps), log=lambda m: None)

    def crash(step: int, values: dict[str, float]) -> None:
        if step == 3:
            raise RuntimeError("crash at step 3")

    with pytest.raises(RuntimeError, match="crash"):
        pretrain(tiny_config(tiny_corpus, tmp_path / "b", *steps), callbacks=[crash], log=lambda m: None)
    assert not (tmp_path / "b" / ".lock").exists()  # the lock is released however the run ends
    said: list[str] = []
    resumed = pretrain(tiny_config(tiny_corpus, tmp_path / "b", *steps), resume=True, log=said.append)
    assert any("resumed from" in m and "step-0000002" in m for m in said), said  # continued, not restarted
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step-0000004" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step-0000004" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    def losses(res: PretrainResult) -> list[tuple[int, float]]:
        return [(r["step"], r.get("mlm/loss", r.get("mlm/accuracy"))) for r in res.metrics]

    assert losses(ref) == losses(resumed)  # every step once, the same values (held-out accuracy included)


def test_the_run_owns_its_folder(tiny_mlm_run: PretrainResult, tiny_corpus: Path) -> None:
    out = tiny_mlm_run.run_dir
    with pytest.raises(CsrlError, match="already holds a run"):
        pretrain(tiny_config(tiny_corpus, out), log=lambda m: None)
    with pytest.raises(CsrlError, match="train.lr"):
        pretrain(tiny_config(tiny_corpus, out, "train.lr=0.5"), resume=True, log=lambda m: None)


def test_continued_pretraining_from_an_mlm_checkpoint(
    tiny_mlm_run: PretrainResult, tiny_corpus: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForMaskedLM

    from csrl.train.mlm_aux import mlm_head_of

    start = tiny_mlm_run.model_dir
    extra = (f"model.init_from={start}", "train.max_steps=1", "train.eval_every=1")
    res = pretrain(tiny_config(tiny_corpus, tmp_path / "more", *extra), log=lambda m: None)
    assert res.model_dir is not None and res.heldout is not None
    before, after = AutoModelForMaskedLM.from_pretrained(start), AutoModelForMaskedLM.from_pretrained(res.model_dir)
    w0 = mlm_head_of(before).predictions.transform.dense.weight
    w1 = mlm_head_of(after).predictions.transform.dense.weight
    assert w0.shape == w1.shape and not torch.equal(w0, w1)  # the checkpoint's head, one step further
    with pytest.raises(CsrlError, match="weights of the masked LM"):  # a bare encoder has no head to continue
        pretrain(tiny_config(tiny_corpus, tmp_path / "bare", f"model.init_from={tiny_model_dir}"), log=lambda m: None)


def test_dense_early_probes_and_every_layer(tiny_corpus: Path, fake_data_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_corpus, tmp_path / "run", "train.max_steps=4", "train.dynamics_every=4",
                      "train.dynamics_early_every=1", "train.dynamics_early_until=2", "train.eval_every=0")  # fmt: skip
    res = pretrain(cfg, data_dir=fake_data_dir)
    records = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    probed = [r for r in records if "geometry/anisotropy" in r]
    assert [r["step"] for r in probed] == [0, 1, 2, 4]  # dense up to step 2, then every 4
    n_layers = cfg.model.layers + 1
    assert all({f"layers/L{i}/anisotropy" for i in range(n_layers)} <= set(r) for r in probed)
    assert all(r[f"layers/L{n_layers - 1}/anisotropy"] == pytest.approx(r["geometry/anisotropy"], abs=1e-6)
               for r in probed)  # fmt: skip
