from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from csrl.errors import CsrlError
from csrl.models.encoder import Encoder
from csrl.train.config import load_config
from csrl.train.geometry_probe import DynamicsCallback, make_dynamics_callback, positive_pairs, probe_sentences
from csrl.train.loop import train

EXPECTED = {
    "geometry/anisotropy",
    "geometry/norm_mean",
    "geometry/intra_similarity",
    "geometry/adjusted_intra_similarity",
    "geometry/self_similarity",
    "geometry/functional_self_similarity",
    "geometry/content_self_similarity",
    "geometry/uniformity",
    "geometry/average_cosine",
    "geometry/alignment",
    "geometry/rogue_shares",
}
N_LAYERS = 3  # the tiny model: embeddings + 2 layers
LAYER_KEYS = {f"layers/L{i}/{k}" for i in range(N_LAYERS) for k in ("anisotropy", "norm_mean", "rogue_top_share")}


def _cfg(model: Path, corpus: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        [
            f"model.model={model}",
            f"data.train_files=[{corpus}]",
            f"output_dir={out}",
            "train.batch_size=8",
            "train.max_steps=5",
            "train.eval_every=0",
            "train.checkpoint_every=5",
            "train.final_eval=false",
            "train.progress=false",
            "train.lr=1e-3",
            *extra,
        ],
    )


def _callback(corpus: Path, every: int = 2) -> DynamicsCallback:
    lines = corpus.read_text().splitlines()
    return DynamicsCallback(lines[:40], every=every, positive_pairs=(lines[40:50], lines[50:60]), batch_size=16)


def test_callback_leaves_training_bit_identical_and_probes_at_its_steps(
    tiny_model_dir: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    plain = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "plain"))
    cb = _callback(tiny_corpus, every=2)
    probed = train(_cfg(tiny_model_dir, tiny_corpus, tmp_path / "probed"), callbacks=[cb])

    a = load_file(str(tmp_path / "plain" / "checkpoints" / "step-0000005" / "model.safetensors"))
    b = load_file(str(tmp_path / "probed" / "checkpoints" / "step-0000005" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    la = [r["train/loss"] for r in plain.metrics if "train/loss" in r]
    lb = [r["train/loss"] for r in probed.metrics if "train/loss" in r]
    assert la == lb

    geo_steps = [r["step"] for r in probed.metrics if "geometry/anisotropy" in r]
    assert geo_steps == [2, 4] == cb.steps
    rec = next(r for r in probed.metrics if r["step"] == 2)
    assert EXPECTED <= set(rec)
    assert all(math.isfinite(rec[k]) for k in EXPECTED)
    assert not any(k.startswith("geometry/") for r in plain.metrics for k in r)


def test_initial_probe_keeps_rng_and_mode(
    tiny_model_dir: Path, tiny_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir))
    enc.train()
    cb = _callback(tiny_corpus)
    original = enc.token_states
    seen = []

    def draws_random_numbers(sentences, batch_size=64):  # type: ignore[no-untyped-def]
        seen.append(enc.training)
        torch.rand(3)  # whatever the forward pass consumes must not shift the training RNG
        return original(sentences, batch_size)

    monkeypatch.setattr(enc, "token_states", draws_random_numbers)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    out = cb.initial(enc)
    assert torch.equal(before, torch.get_rng_state())
    assert enc.training and all(m.training for m in enc.modules())
    assert seen == [False]  # probed in eval mode
    assert set(out) == EXPECTED | LAYER_KEYS and cb.steps == [0]
    assert 0.0 <= out["geometry/alignment"] <= 4.0 and out["geometry/uniformity"] < 0
    # deterministic: the same weights give the same numbers
    assert cb.initial(enc) == out


def test_factory_reads_probe_and_pairs(tiny_model_dir: Path, fake_data_dir: Path, tmp_path: Path) -> None:
    corpus = fake_data_dir / "train" / "wiki" / "wiki1m_for_simcse.head.txt"
    enc = Encoder.from_pretrained(model=str(tiny_model_dir))
    assert make_dynamics_callback(_cfg(tiny_model_dir, corpus, tmp_path), enc, fake_data_dir) is None
    cfg = _cfg(tiny_model_dir, corpus, tmp_path, "train.dynamics_every=4", "train.dynamics_probe_size=10")
    cb = make_dynamics_callback(cfg, enc, fake_data_dir)
    assert cb is not None and cb.every == 4
    assert cb.sentences == probe_sentences(fake_data_dir, 10) and len(cb.sentences) == 10
    assert cb.sentences[0][0].isupper()  # the raw (cased) STS-B release, as paper A
    pairs = positive_pairs(fake_data_dir)
    assert pairs is not None and cb.pairs == pairs
    gold = [float(line.split("\t")[4]) for line in (fake_data_dir / "sts/stsb/sts-test.csv").read_text().splitlines()]
    assert len(pairs[0]) == sum(g > 4 for g in gold)
    assert positive_pairs(tmp_path / "nowhere") is None

    with pytest.raises(CsrlError, match="multiple of train.log_every"):  # refused with the config, before any model
        _cfg(tiny_model_dir, corpus, tmp_path, "train.dynamics_every=3", "train.log_every=2")
    bad = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, dynamics_every=3, log_every=2))
    with pytest.raises(CsrlError, match="multiple of train.log_every"):  # and by the factory, for built configs
        make_dynamics_callback(bad, enc, fake_data_dir)
    with pytest.raises(CsrlError):
        make_dynamics_callback(cfg, enc, tmp_path / "nowhere")


def test_per_layer_probe_matches_an_independent_computation(tiny_model_dir: Path, tiny_corpus: Path) -> None:
    enc = Encoder.from_pretrained(model=str(tiny_model_dir))
    cb = _callback(tiny_corpus)
    out = cb.probe(enc)
    states = enc.token_states(cb.sentences, batch_size=16)
    offsets = states.offsets.tolist()
    gen = torch.Generator().manual_seed(0)  # the probe's draw: one token of each sentence (seed 0)
    from csrl.analysis.token_metrics import sample_one_token_per_sentence

    rows = sample_one_token_per_sentence(states.offsets, n_samples=1000, generator=gen)
    assert len(rows) == len(offsets) - 1
    for i, x in enumerate(states.layers):
        u = torch.nn.functional.normalize(x[rows].double(), dim=1)
        m = u.shape[0]
        cos = u @ u.T
        aniso = (cos.sum() - m) / (m * (m - 1))
        assert out[f"layers/L{i}/anisotropy"] == pytest.approx(float(aniso), abs=1e-9)
        assert out[f"layers/L{i}/norm_mean"] == pytest.approx(float(x.double().norm(dim=1).mean()), rel=1e-6)
        # dimension d's share of the summed off-diagonal cosine: sum_{a != b} u_ad u_bd / sum_{a != b} cos_ab
        per_dim = torch.stack([(torch.outer(u[:, d], u[:, d]).sum() - (u[:, d] ** 2).sum()) for d in range(u.shape[1])])
        assert out[f"layers/L{i}/rogue_top_share"] == pytest.approx(float((per_dim / (cos.sum() - m)).max()), rel=1e-6)
    assert out["layers/L2/anisotropy"] == pytest.approx(out["geometry/anisotropy"], abs=1e-6)  # same draw, last layer


def test_dense_early_probing_steps() -> None:
    cb = DynamicsCallback(["a b", "c d"], every=10, early_every=2, early_until=6)
    assert [s for s in range(1, 31) if cb.due(s)] == [2, 4, 6, 10, 20, 30]
    plain = DynamicsCallback(["a b", "c d"], every=10)
    assert [s for s in range(1, 31) if plain.due(s)] == [10, 20, 30]
    with pytest.raises(CsrlError, match="multiple of train.log_every"):
        load_config(None, ["train.dynamics_every=10", "train.dynamics_early_every=3", "train.log_every=2"])
