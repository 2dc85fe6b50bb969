"""ESimCSE's word repetition (csrl.data.augment): the paper's draw, and what it may never do to a row."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from csrl.data.augment import repeat_rows, repeat_subwords, repetition_count

CLS, SEP, PAD = 101, 102, 0
SPECIAL = (CLS, SEP, PAD)


def _features(rows: list[list[int]], *, left: bool = False) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[k, cols], mask[k, cols] = torch.tensor(r), 1
    types = torch.zeros_like(ids)
    types[:, width // 2 :] = mask[:, width // 2 :]  # a second segment, so copies must carry their source's type
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _real(features: dict[str, torch.Tensor], row: int, key: str = "input_ids") -> list[int]:
    keep = features["attention_mask"][row].bool()
    return [int(x) for x in features[key][row][keep]]


def test_the_count_is_uniform_on_the_papers_range() -> None:
    """dup_len ~ U{0..max(2, int(dup_rate * N))}: N = 20, rate 0.32 -> {0..6}; N = 3 -> {0..2} (the max(2, .))."""
    g = torch.Generator().manual_seed(0)
    for n, high in ((20, 6), (3, 2)):
        draws = 7000
        counts = Counter(repetition_count(n, 0.32, g) for _ in range(draws))
        assert set(counts) == set(range(high + 1)), (n, counts)
        expected = draws / (high + 1)
        chi2 = sum((counts[k] - expected) ** 2 / expected for k in range(high + 1))
        assert chi2 < 22.5, (n, counts)  # chi-square, <= 6 degrees of freedom, p ~ 0.001


def test_the_count_is_limited_to_the_content_tokens() -> None:
    """A one-subword sentence draws from {0, 1, 2} and can repeat only that subword: P(1) = 2/3."""
    g = torch.Generator().manual_seed(1)
    counts = Counter(repetition_count(1, 0.32, g) for _ in range(6000))
    assert set(counts) == {0, 1}
    assert abs(counts[1] / 6000 - 2 / 3) < 0.03
    assert repetition_count(0, 0.32, g) == 0


def test_positions_are_uniform_without_replacement() -> None:
    g = torch.Generator().manual_seed(2)
    n, trials = 10, 6000
    hits: Counter[int] = Counter()
    total = 0
    for _ in range(trials):
        src = repeat_subwords(list(range(n)), [True] * n, dup_rate=0.5, generator=g)  # count in {0..5}
        repeated = [p for p, c in Counter(src).items() if c == 2]
        assert all(c in (1, 2) for c in Counter(src).values())  # without replacement: at most one copy each
        hits.update(repeated)
        total += len(repeated)
    assert abs(total / trials - 2.5) < 0.1  # E[count] = 5/2
    for p in range(n):  # each position equally likely: E = 0.25 per trial
        assert abs(hits[p] / trials - 0.25) < 0.03, (p, hits)


@pytest.mark.parametrize("left", [False, True], ids=["right-padding", "left-padding"])
def test_repeated_rows_keep_specials_order_and_adjacency(left: bool) -> None:
    g = torch.Generator().manual_seed(3)
    rows = [[CLS, 5, 6, 7, SEP], [CLS, 8, 9, 10, 11, 12, 13, 14, 15, 16, SEP], [CLS, 20, SEP], [CLS, SEP]]
    feats = _features(rows + rows, left=left)  # view 0 then view 1
    for _ in range(200):
        out = repeat_rows(
            feats, range(4, 8), dup_rate=0.32, special_ids=SPECIAL, pad_id=PAD, left_padding=left, generator=g
        )
        assert out["input_ids"].shape[1] >= feats["input_ids"].shape[1]
        for r in range(4):  # view 0 untouched (only padded on the right)
            assert _real(out, r) == rows[r]
            assert _real(out, r, "token_type_ids") == _real(feats, r, "token_type_ids")
        for r in range(4, 8):
            orig, new = rows[r - 4], _real(out, r)
            assert new.count(CLS) == 1 and new.count(SEP) == 1 and new[0] == CLS and new[-1] == SEP
            # collapsing each adjacent copy gives the original back: order kept, every copy next to its source
            types, src_types = _real(out, r, "token_type_ids"), _real(feats, r, "token_type_ids")
            collapsed: list[int] = []
            collapsed_types: list[int] = []
            k = 0
            while k < len(new):
                collapsed.append(new[k])
                collapsed_types.append(types[k])
                copy = k + 1 < len(new) and new[k + 1] == new[k] and new[k] not in SPECIAL
                if copy:
                    assert types[k + 1] == types[k]  # a copy carries its source's token type
                k += 2 if copy else 1
            assert collapsed == orig and collapsed_types == src_types
            extra = len(new) - len(orig)
            n_content = len(orig) - 2
            assert 0 <= extra <= min(n_content, max(2, int(0.32 * n_content)))
            assert _real(out, r, "attention_mask") == [1] * len(new)


def test_room_caps_the_copies() -> None:
    g = torch.Generator().manual_seed(4)
    row = [CLS, *range(30, 50), SEP]  # 22 tokens, 20 content
    feats = _features([row, row])
    lengths = set()
    for _ in range(100):
        out = repeat_rows(feats, range(1, 2), dup_rate=1.0, special_ids=SPECIAL, pad_id=PAD, max_tokens=24, generator=g)
        lengths.add(len(_real(out, 1)))
    assert max(lengths) == 24 and min(lengths) == 22


def test_unknown_feature_keys_are_refused() -> None:
    feats = {**_features([[CLS, 5, SEP]]), "special_tokens_mask": torch.zeros(1, 3)}
    with pytest.raises(ValueError, match="special_tokens_mask"):
        repeat_rows(feats, range(1), dup_rate=0.3, special_ids=SPECIAL, pad_id=PAD)


def test_with_a_real_tokenizer(tiny_model_dir: Path) -> None:
    """On the MiniLM tokenizer: the repeated view decodes to the sentence with some words' pieces doubled."""
    from csrl.models.encoder import Encoder

    enc = Encoder.from_pretrained(model=str(tiny_model_dir))
    texts = ["a man is playing a guitar on the stage tonight", "cats"]
    feats = enc.tokenize(texts + texts, max_length=8)  # truncated first: the repeated view may exceed 8
    g = torch.Generator().manual_seed(5)
    tok = enc.tokenizer
    out = repeat_rows(
        feats, range(2, 4), dup_rate=1.0, special_ids=tok.all_special_ids, pad_id=tok.pad_token_id, generator=g
    )
    for r in (2, 3):
        orig, new = _real(feats, r), _real(out, r)
        assert new[0] == tok.cls_token_id and new[-1] == tok.sep_token_id
        assert sorted(set(new)) == sorted(set(orig)) and len(new) >= len(orig)
    assert out["input_ids"].shape[1] <= 8 + 6  # at most max(2, N) = 6 copies of the 6 content pieces
