"""Batches for masked-LM pretraining: pad token-id sequences and mask them the BERT way.

The masking itself is :func:`csrl.train.mlm_aux.mask_tokens` (shared with SimCSE's MLM auxiliary loss, so
both mask identically): ``data.mlm_probability`` of the tokens (15 %), never a special token ([CLS], [SEP],
[PAD], [UNK], ...) nor padding; of those 80 % become ``[MASK]``, 10 % a random token, 10 % stay; token by
token with transformers' ``DataCollatorForLanguageModeling``, or whole WordPiece words with
``data.whole_word_masking``. Training batches draw from torch's global RNG (restored by resumable
checkpoints); the held-out batches are masked once with a fixed seed, so every evaluation of a run (and of
runs with other seeds) scores the same masked positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from csrl.train.mlm_aux import mask_tokens, never_masked, wordpiece_continuations

__all__ = ["HELDOUT_MASK_SEED", "MaskedBatch", "Masker", "pad_sequences"]

HELDOUT_MASK_SEED = 0  # the held-out masks: the same in every run


@dataclass
class MaskedBatch:
    """A masked batch: ``input_ids`` (masked), ``attention_mask``, ``labels`` (-100 where not masked), all (B, T)."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor

    def to(self, device: torch.device) -> MaskedBatch:
        return MaskedBatch(
            *(x.to(device, non_blocking=True) for x in (self.input_ids, self.attention_mask, self.labels))
        )

    @property
    def n_masked(self) -> int:
        return int((self.labels != -100).sum())

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def pad_sequences(seqs: Sequence[np.ndarray], pad_id: int) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask), right-padded to the longest sequence."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, : len(s)] = torch.from_numpy(np.asarray(s, dtype=np.int64))
        mask[k, : len(s)] = 1
    return ids, mask


class Masker:
    """Pads and masks sequences for ``tokenizer``; ``whole_word`` needs a WordPiece vocabulary."""

    def __init__(self, tokenizer: Any, *, probability: float, whole_word: bool) -> None:
        self.tokenizer = tokenizer
        self.probability = probability
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.special_ids = list(tokenizer.all_special_ids)
        self.continuations = wordpiece_continuations(tokenizer) if whole_word else None

    def __call__(self, seqs: Sequence[np.ndarray]) -> MaskedBatch:
        ids, attention = pad_sequences(seqs, self.pad_id)
        never = never_masked(ids, attention, self.special_ids)
        inputs, labels = mask_tokens(
            ids, self.tokenizer, never=never, probability=self.probability, continuations=self.continuations
        )
        return MaskedBatch(inputs, attention, labels)

    def fixed(self, seqs: Sequence[np.ndarray], batch_size: int, *, seed: int = HELDOUT_MASK_SEED) -> list[MaskedBatch]:
        """``seqs`` masked once with ``seed`` (torch's global RNG is left as it was), in batches."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return [self(seqs[i : i + batch_size]) for i in range(0, len(seqs), batch_size)]
