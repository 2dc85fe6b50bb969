"""Token-level metrics vs brute-force loops (numpy / scikit-learn), and known geometry."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

from csrl.analysis import token_metrics as tm
from csrl.analysis.function_words import (
    CONTENT,
    FUNCTIONAL,
    OTHER,
    classify_token,
    is_punctuation,
    load_functional_words,
    parse_word_list,
    token_kinds,
)

TOL = 1e-6


def packed(seed: int, n_sent: int = 40, dim: int = 16, vocab: int = 12, max_len: int = 9, offset: float = 1.0):
    """Random packed sentences: (x, token_ids, sentence_index, offsets). A small vocab forces repeats;
    a shared offset makes cosines clearly non-zero."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_len + 1, (n_sent,), generator=g)
    offsets = torch.zeros(n_sent + 1, dtype=torch.long)
    offsets[1:] = lengths.cumsum(0)
    n = int(offsets[-1])
    x = torch.randn(n, dim, generator=g) + offset * torch.randn(dim, generator=g)
    ids = torch.randint(0, vocab, (n,), generator=g)
    sent = torch.repeat_interleave(torch.arange(n_sent), lengths)
    return x, ids, sent, offsets


def offdiag_mean(vectors: np.ndarray) -> float:
    cos = cosine_similarity(vectors)
    n = len(cos)
    return float((cos.sum() - np.trace(cos)) / (n * (n - 1)))


def brute_self_similarity(x, ids, sent, min_count=5):
    """Paper A's procedure, written as loops: total-occurrence counts, first occurrence per sentence."""
    ids_l, sent_l, xs = ids.tolist(), sent.tolist(), x.double().numpy()
    counts = Counter(ids_l)
    firsts: dict[int, dict[int, int]] = {}
    for row, (t, s) in enumerate(zip(ids_l, sent_l, strict=True)):
        firsts.setdefault(t, {}).setdefault(s, row)
    out = {}
    for t, per_sent in firsts.items():
        if counts[t] >= min_count and len(per_sent) >= 2:
            out[t] = offdiag_mean(xs[list(per_sent.values())])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_pairwise_cosine_matches_sklearn(seed):
    x, *_ = packed(seed)
    assert tm.mean_pairwise_cosine(x[:50]) == pytest.approx(offdiag_mean(x[:50].double().numpy()), abs=TOL)


def test_mean_pairwise_cosine_needs_two_rows():
    with pytest.raises(ValueError):
        tm.mean_pairwise_cosine(torch.ones(1, 3))


def test_sampling_one_token_per_distinct_sentence():
    _, _, sent, offsets = packed(0, n_sent=30)
    g = torch.Generator().manual_seed(3)
    rows = tm.sample_one_token_per_sentence(offsets, n_samples=20, generator=g)
    assert rows.numel() == 20
    assert sent[rows].unique().numel() == 20  # one token per sentence, distinct sentences
    again = tm.sample_one_token_per_sentence(offsets, n_samples=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(rows, again)
    other = tm.sample_one_token_per_sentence(offsets, n_samples=20, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(rows, other)
    all_rows = tm.sample_one_token_per_sentence(offsets, n_samples=1000, generator=g)
    assert all_rows.numel() == 30  # capped at the number of sentences
    assert torch.equal(sent[all_rows].sort().values, torch.arange(30))


def test_sampling_skips_empty_sentences_and_covers_positions():
    offsets = torch.tensor([0, 0, 3, 3, 5])
    seen = set()
    for s in range(200):
        rows = tm.sample_one_token_per_sentence(offsets, generator=torch.Generator().manual_seed(s))
        assert rows.numel() == 2
        seen.update(rows.tolist())
    assert seen == {0, 1, 2, 3, 4}


def test_anisotropy_baseline_matches_brute_force():
    x, _, _, offsets = packed(1)
    rows = tm.sample_one_token_per_sentence(offsets, generator=torch.Generator().manual_seed(0))
    expected = offdiag_mean(x[rows].double().numpy())
    assert tm.anisotropy_baseline(x, rows) == pytest.approx(expected, abs=TOL)


def test_anisotropy_known_geometry():
    g = torch.Generator().manual_seed(0)
    lengths = torch.full((1000,), 5)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    rows = tm.sample_one_token_per_sentence(offsets, generator=g)
    iso = torch.randn(5000, 64, generator=g)
    assert abs(tm.anisotropy_baseline(iso, rows)) < 0.01
    cone = iso + 50.0 * torch.randn(64, generator=g)  # large shared offset: one narrow cone
    assert tm.anisotropy_baseline(cone, rows) > 0.95


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("min_count", [2, 5, 12])
def test_self_similarity_matches_brute_force(seed, min_count):
    x, ids, sent, _ = packed(seed)
    index = tm.occurrence_index(ids, sent, min_count=min_count)
    expected = brute_self_similarity(x, ids, sent, min_count=min_count)
    assert index.token_ids.tolist() == sorted(expected)
    got = tm.self_similarity(x, index)
    np.testing.assert_allclose(got.numpy(), [expected[t] for t in sorted(expected)], atol=TOL)


def test_occurrence_index_counts_occurrences_not_sentences():
    # id 7 occurs 5 times in 2 sentences: qualifies at min_count 5 (occurrences counted), uses 2 rows.
    ids = torch.tensor([7, 7, 7, 1, 7, 7, 2, 1])
    sent = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    index = tm.occurrence_index(ids, sent, min_count=5)
    assert index.token_ids.tolist() == [7]
    assert index.counts.tolist() == [5] and index.n_contexts.tolist() == [2]
    assert sorted(index.rows.tolist()) == [0, 4]  # first occurrence in each sentence
    assert index.row_group.tolist() == [0, 1, 1, 1, 0, 1, 1, 1]  # 1 = dump slot
    # one sentence only: no pair, dropped
    single = tm.occurrence_index(torch.tensor([3, 3, 3, 3, 3]), torch.zeros(5, dtype=torch.long), min_count=5)
    assert single.token_ids.numel() == 0


def test_self_similarity_of_identical_vectors_is_one():
    ids = torch.tensor([4, 9, 4, 9, 4, 1, 4, 4])
    sent = torch.tensor([0, 0, 1, 1, 2, 2, 3, 4])
    x = torch.randn(8, 10)
    x[ids == 4] = torch.tensor([1.0] * 10) * torch.tensor([[0.5], [2.0], [3.0], [1.0], [7.0]])  # same direction
    index = tm.occurrence_index(ids, sent, min_count=5)
    assert index.token_ids.tolist() == [4]
    assert float(tm.self_similarity(x, index)[0]) == pytest.approx(1.0, abs=TOL)


@pytest.mark.parametrize("seed", [0, 3])
def test_intra_sentence_similarity_matches_loops(seed):
    x, _, sent, offsets = packed(seed)
    n_sent = offsets.numel() - 1
    got = tm.intra_sentence_similarity(x, sent, n_sent)
    xs = x.double().numpy()
    expected = []
    for s in range(n_sent):
        tokens = xs[int(offsets[s]) : int(offsets[s + 1])]
        expected.append(cosine_similarity(tokens, tokens.mean(axis=0, keepdims=True)).mean())
    np.testing.assert_allclose(got.numpy(), expected, atol=TOL)


def test_intra_sentence_similarity_empty_sentence_is_nan():
    x = torch.randn(3, 4)
    got = tm.intra_sentence_similarity(x, torch.tensor([0, 0, 2]), 3)
    assert torch.isnan(got[1]) and torch.isfinite(got[[0, 2]]).all()
    assert float(got[2]) == pytest.approx(1.0, abs=TOL)  # a one-token sentence is its own mean


def test_token_norms():
    x, *_ = packed(0)
    np.testing.assert_allclose(tm.token_norms(x).numpy(), np.linalg.norm(x.double().numpy(), axis=1), rtol=1e-6)


def brute_rogue(xs: np.ndarray, include_self_pairs: bool) -> np.ndarray:
    """Paper A's loop: per dimension, sum over pairs of x_ad x_bd / (|x_a||x_b|), over the total cosine."""
    norms = np.linalg.norm(xs, axis=1)
    n = len(xs)
    mask = np.ones((n, n)) if include_self_pairs else 1.0 - np.eye(n)
    total = (cosine_similarity(xs) * mask).sum()
    out = []
    for d in range(xs.shape[1]):
        dc = np.outer(xs[:, d], xs[:, d]) / np.outer(norms, norms)
        out.append((dc * mask).sum() / total)
    return np.array(out)


@pytest.mark.parametrize("include_self_pairs", [True, False])
def test_rogue_dimension_shares_match_loops(include_self_pairs):
    x, *_ = packed(2)
    xs = x[:60].double().numpy()
    got = tm.rogue_dimension_shares(x[:60], include_self_pairs=include_self_pairs)
    np.testing.assert_allclose(got.numpy(), brute_rogue(xs, include_self_pairs), atol=TOL)
    assert float(got.sum()) == pytest.approx(1.0, abs=TOL)


def test_rogue_dimension_finds_dominant_dimension():
    x = torch.randn(500, 32, generator=torch.Generator().manual_seed(0))
    x[:, 7] += 20.0
    dims, shares = tm.top_dimensions(tm.rogue_dimension_shares(x), 3)
    assert dims[0] == 7 and shares[0] > 0.95


def test_token_rogue_shares_match_per_token_loops():
    x, ids, sent, _ = packed(1)
    index = tm.occurrence_index(ids, sent)
    got = tm.token_rogue_shares(x, index)
    xs = x.double().numpy()
    for t in range(index.token_ids.numel()):
        rows = index.rows[index.group == t].numpy()
        np.testing.assert_allclose(got[t].numpy(), brute_rogue(xs[rows], True), atol=TOL)


def test_layer_token_metrics_equals_individual_functions():
    x, ids, sent, offsets = packed(4)
    n_sent = offsets.numel() - 1
    index = tm.occurrence_index(ids, sent)
    rows = [tm.sample_one_token_per_sentence(offsets, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    m = tm.layer_token_metrics(x, sentence_index=sent, n_sentences=n_sent, index=index, sample_rows=rows)
    np.testing.assert_allclose(m.anisotropy.numpy(), [tm.anisotropy_baseline(x, r) for r in rows], atol=TOL)
    torch.testing.assert_close(m.self_similarity, tm.self_similarity(x, index), atol=TOL, rtol=0)
    torch.testing.assert_close(m.intra_similarity, tm.intra_sentence_similarity(x, sent, n_sent), atol=TOL, rtol=0)
    torch.testing.assert_close(m.norms, tm.token_norms(x), atol=TOL, rtol=0)
    torch.testing.assert_close(m.rogue_shares, tm.rogue_dimension_shares(x[rows[0]]), atol=TOL, rtol=0)
    torch.testing.assert_close(m.token_rogue_shares, tm.token_rogue_shares(x, index).mean(0), atol=TOL, rtol=0)


def test_frequency_buckets_and_masked_mean():
    counts = torch.tensor([3, 5, 9, 10, 19, 20, 5000])
    assert tm.frequency_buckets(counts, [5, 10, 20]).tolist() == [-1, 0, 0, 1, 1, 2, 2]
    values = torch.tensor([1.0, 2.0, 4.0])
    assert tm.masked_mean(values, torch.tensor([True, False, True])) == pytest.approx(2.5)
    assert np.isnan(tm.masked_mean(values, torch.zeros(3, dtype=torch.bool)))


# ---------------------------------------------------------------- functional vs content
def test_bundled_functional_words():
    words = load_functional_words()
    assert 250 <= len(words) <= 500
    assert {"the", "of", "and", "is", "she", "would", "because", "not", "s", "t"} <= words
    assert not {"dog", "run", "beautiful", "woman", "government"} & words
    assert all(w == w.lower() and w.strip() == w and " " not in w for w in words)


def test_parse_word_list():
    assert parse_word_list("# c\nThe \n\nof # prep\n") == frozenset({"the", "of"})


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("the", FUNCTIONAL),
        ("The", FUNCTIONAL),
        (".", FUNCTIONAL),
        ("'", FUNCTIONAL),
        ("--", FUNCTIONAL),
        ("$", FUNCTIONAL),
        ("[CLS]", FUNCTIONAL),
        ("<s>", FUNCTIONAL),
        ("Ġthe", FUNCTIONAL),
        ("▁of", FUNCTIONAL),
        ("dog", CONTENT),
        ("Ġdog", CONTENT),
        ("naïve", CONTENT),
        ("##ing", OTHER),
        ("##.", OTHER),
        ("123", OTHER),
        ("3d", OTHER),
        ("Ġ", OTHER),
    ],
)
def test_classify_token(token, kind):
    assert classify_token(token, load_functional_words()) == kind


def test_classify_token_with_explicit_special_tokens():
    words = load_functional_words()
    assert classify_token("[CLS]", words, special_tokens={"[CLS]"}) == FUNCTIONAL
    # explicit list given: "[FOO]" is not special, and not a word either
    assert classify_token("[FOO]", words, special_tokens={"[CLS]"}) == OTHER


def test_token_kinds_with_list_or_callable():
    vocab = ["[PAD]", "the", "dog", "##s", ".", "ran"]
    ids = torch.tensor([1, 2, 3, 4, 5, 0])
    expected = [FUNCTIONAL, CONTENT, OTHER, FUNCTIONAL, CONTENT, FUNCTIONAL]
    assert token_kinds(ids, vocab).tolist() == expected
    assert token_kinds(ids, lambda i: vocab[i]).tolist() == expected
    assert token_kinds(ids, vocab, functional={"ran"}).tolist() == [CONTENT, CONTENT, OTHER, 1, 1, 1]


def test_is_punctuation():
    assert is_punctuation("...") and is_punctuation("%") and not is_punctuation("a.") and not is_punctuation("")
