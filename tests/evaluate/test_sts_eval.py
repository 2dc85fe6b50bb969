from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from csrl.data.sts import STSPairs, STSTask
from csrl.evaluate.sts import cosine_scores, evaluate_sts, score_task

REFERENCE_MEAN_POOLING = {  # papers.md 4.1: all-MiniLM-L6-v2, mean pooling, SentEval protocol
    "STS12": 72.37, "STS13": 80.60, "STS14": 75.59, "STS15": 85.39, "STS16": 78.99, "STS-B": 82.03, "SICK-R": 77.15,
}  # fmt: skip


def _random_task(rng: np.random.Generator, sizes: list[int]) -> tuple[STSTask, dict[str, np.ndarray]]:
    vocab: dict[str, np.ndarray] = {}
    subsets = []
    for k, n in enumerate(sizes):
        s1 = tuple(f"s{k}-{i}-a" for i in range(n))
        s2 = tuple(f"s{k}-{i}-b" for i in range(n))
        for s in s1 + s2:
            vocab[s] = rng.normal(size=8)
        subsets.append(STSPairs(f"sub{k}", s1, s2, rng.uniform(0, 5, size=n)))
    return STSTask("STS12", tuple(subsets)), vocab


def test_aggregates_match_scipy_on_hand_made_data() -> None:
    rng = np.random.default_rng(0)
    task, vocab = _random_task(rng, [7, 12, 30])
    res = score_task(task, vocab)
    preds, golds, per = [], [], []
    for p in task.subsets:
        pred = [float(np.dot(vocab[a], vocab[b]) / np.linalg.norm(vocab[a]) / np.linalg.norm(vocab[b]))
                for a, b in zip(p.sentences1, p.sentences2, strict=True)]  # fmt: skip
        preds += pred
        golds += list(p.scores)
        per.append(spearmanr(pred, p.scores)[0] * 100)
    n = np.array([7, 12, 30])
    assert res.spearman["all"] == pytest.approx(spearmanr(preds, golds)[0] * 100, abs=1e-9)
    assert res.pearson["all"] == pytest.approx(pearsonr(preds, golds)[0] * 100, abs=1e-9)
    assert res.spearman["mean"] == pytest.approx(np.mean(per), abs=1e-9)
    assert res.spearman["wmean"] == pytest.approx(float((np.array(per) * n).sum() / n.sum()), abs=1e-9)
    assert res.n_pairs == 49


def test_all_differs_from_mean_when_subsets_are_shifted() -> None:
    # Concatenation ('all') mixes sub-datasets; two perfectly ranked subsets with offset scores are not
    # perfectly ranked together. This is why the aggregate must be named.
    emb = {"a": np.array([1.0, 0.0]), "b": np.array([1.0, 0.1]), "c": np.array([1.0, 1.0]), "d": np.array([0.0, 1.0])}
    t = STSTask("STS12", (STSPairs("x", ("a", "a"), ("b", "c"), np.array([4.0, 3.0])),
                          STSPairs("y", ("a", "a"), ("c", "d"), np.array([2.0, 1.0]))))  # fmt: skip
    r = score_task(t, emb)
    assert r.spearman["mean"] == pytest.approx(100.0)
    assert r.spearman["all"] == pytest.approx(spearmanr([0.995, 0.707, 0.707, 0.0], [4, 3, 2, 1])[0] * 100, abs=1e-6)


def test_encode_once_per_unique_sentence() -> None:
    rng = np.random.default_rng(1)
    task, vocab = _random_task(rng, [5, 6])
    dup = STSTask("STS13", task.subsets)
    calls: list[int] = []

    def encode(sents):  # type: ignore[no-untyped-def]
        calls.append(len(sents))
        return np.stack([vocab[s] for s in sents])

    res = evaluate_sts(encode, [task, dup])
    assert calls == [len(vocab)]
    assert res.tasks[0].spearman == res.tasks[1].spearman


def test_cosine_zero_vector_is_zero_not_nan() -> None:
    assert cosine_scores(np.zeros((1, 3)), np.ones((1, 3)))[0] == 0.0


@pytest.mark.slow
def test_packaged_model_reproduces_papers_reference(data_dir: Path) -> None:
    """papers.md 4.1: every task within 0.01 of the reference (mean pooling, SentEval protocol)."""
    from csrl.data.sts import load_sts_suite
    from csrl.models.encoder import Encoder

    enc = Encoder.from_pretrained(pooler="mean")
    res = evaluate_sts(lambda s: enc.encode(s, batch_size=128), load_sts_suite(data_dir))
    scores = res.scores()
    for name, ref in REFERENCE_MEAN_POOLING.items():
        assert abs(scores[name] - ref) <= 0.01, (name, scores[name], ref)
    assert abs(scores["Avg"] - 78.87) <= 0.01
