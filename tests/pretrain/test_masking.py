"""BERT's masking, checked by its statistics over many draws: 15 % of the maskable tokens, of those 80 %
[MASK], 10 % random, 10 % kept; special tokens and padding never; whole words together.

Tolerances are 5 binomial standard deviations of each share (a false alarm about once in 3.5 million runs);
the draws are seeded, so a run is repeatable."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch

from csrl.pretrain.masking import Masker, pad_sequences
from csrl.pretrain.model import load_tokenizer
from csrl.train.mlm_aux import IGNORE, never_masked, wordpiece_continuations

WORDS = (
    "the a of cat dog sat on mat unbelievably hyperparameterization tokenizers embeddings ☃ running "
    "quickly , . river bank and or paris london 1984 isotropy contrastive"
).split()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("embedded:all-MiniLM-L6-v2")


def _sequences(tokenizer: Any, n: int, seed: int = 0) -> list[Any]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) for _ in range(n)]
    import numpy as np

    return [np.asarray(ids) for ids in tokenizer(texts)["input_ids"]]  # [CLS] ... [SEP], various lengths


def _within(count: int, total: int, p: float, label: str) -> None:
    sigma = math.sqrt(p * (1 - p) / total)
    share = count / total
    assert abs(share - p) < 5 * sigma, f"{label}: {share:.4f} of {total}, expected {p} +- {5 * sigma:.4f}"


def _draws(tokenizer: Any, *, whole_word: bool, rounds: int = 60) -> dict[str, int]:
    masker = Masker(tokenizer, probability=0.15, whole_word=whole_word)
    seqs = _sequences(tokenizer, 64)
    ids, attention = pad_sequences(seqs, int(tokenizer.pad_token_id))
    never = never_masked(ids, attention, tokenizer.all_special_ids)
    assert bool((attention == 0).any()), "the batch must hold padding"
    assert bool(never[attention.bool()].any()), "the batch must hold special tokens"
    torch.manual_seed(1)
    counts = dict.fromkeys(("maskable", "chosen", "mask", "kept", "random", "never_chosen", "out_of_vocab"), 0)
    for _ in range(rounds):
        b = masker(seqs)
        chosen = b.labels != IGNORE
        assert torch.equal(b.labels[chosen], ids[chosen])  # labels are the original tokens
        assert torch.equal(b.input_ids[~chosen], ids[~chosen])  # nothing else changes
        counts["maskable"] += int((~never).sum())
        counts["chosen"] += int(chosen.sum())
        counts["never_chosen"] += int((chosen & never).sum())
        as_mask = chosen & (b.input_ids == tokenizer.mask_token_id)
        kept = chosen & (b.input_ids == ids)
        counts["mask"] += int(as_mask.sum())
        counts["kept"] += int(kept.sum())
        counts["random"] += int((chosen & ~as_mask & ~kept).sum())
        counts["out_of_vocab"] += int(((b.input_ids < 0) | (b.input_ids >= len(tokenizer))).sum())
    return counts


@pytest.mark.parametrize("whole_word", [False, True], ids=["tokens", "whole-words"])
def test_80_10_10_over_many_draws_and_never_special_or_padding(tokenizer: Any, whole_word: bool) -> None:
    c = _draws(tokenizer, whole_word=whole_word)
    assert c["never_chosen"] == 0  # special tokens and padding: never, not once
    assert c["out_of_vocab"] == 0
    if not whole_word:  # (whole words: the rate is checked per word below; tokens of a word go together)
        _within(c["chosen"], c["maskable"], 0.15, "masked share")
    v = len(tokenizer)  # a random replacement equal to [MASK] or to the original token counts as such
    _within(c["mask"], c["chosen"], 0.8 + 0.1 / v, "[MASK] share")
    _within(c["kept"], c["chosen"], 0.1 + 0.1 / v, "kept share")
    _within(c["random"], c["chosen"], 0.1 - 0.2 / v, "random share")


def test_whole_word_masking_masks_whole_words_at_the_token_rate(tokenizer: Any) -> None:
    masker = Masker(tokenizer, probability=0.15, whole_word=True)
    seqs = _sequences(tokenizer, 64, seed=3)
    ids, attention = pad_sequences(seqs, int(tokenizer.pad_token_id))
    cont = wordpiece_continuations(tokenizer)[ids] & attention.bool()
    assert int(cont.sum()) > 100, "the batch must hold many multi-piece words"
    never = never_masked(ids, attention, tokenizer.all_special_ids)
    torch.manual_seed(2)
    chosen_words = words = partial = 0
    for _ in range(30):
        chosen = masker(seqs).labels != IGNORE
        for r in range(ids.shape[0]):
            start = None
            for j in range(ids.shape[1] + 1):
                at_start = j == ids.shape[1] or bool(never[r, j]) or not bool(cont[r, j])
                if at_start and start is not None:  # the word start..j-1 ended
                    span = chosen[r, start:j]
                    words += 1
                    partial += int(bool(span.any()) and not bool(span.all()))
                    chosen_words += int(bool(span.all()))
                    start = None
                if j < ids.shape[1] and not bool(never[r, j]) and not bool(cont[r, j]):
                    start = j
    assert partial == 0, f"{partial} of {words} words were masked in part"
    _within(chosen_words, words, 0.15, "masked share of words")


def test_a_tokenizer_without_wordpieces_is_refused_for_whole_words(tokenizer: Any) -> None:
    from csrl.errors import CsrlError

    class NoPieces:
        def get_vocab(self) -> dict[str, int]:
            return {"a": 0, "b": 1}

        def __len__(self) -> int:
            return 2

    with pytest.raises(CsrlError, match="WordPiece"):
        wordpiece_continuations(NoPieces())
