"""Input-side augmentations of tokenised batches: ESimCSE's word (subword) repetition.

**Word repetition** (Wu et al., "ESimCSE: Enhanced Sample Building Method for Contrastive Learning of
Unsupervised Sentence Embedding", COLING 2022, Section 3.1). SimCSE's two dropout views of a sentence have the
same length, so length alone can tell a positive pair apart; ESimCSE lengthens the positive view by repeating a
few of its subwords. For a sentence tokenised (and truncated) to x = (x_1, ..., x_N) content subwords:

    dup_len ~ Uniform{0, 1, ..., max(2, int(dup_rate * N))}
    dup_set = dup_len positions of {1..N}, drawn uniformly without replacement
    x+      = x with every x_k, k in dup_set, followed by a copy of itself

What csrl does exactly (:func:`repeat_subwords`, :func:`repeat_rows`):

- N counts the row's *content* subwords: real tokens (``attention_mask`` 1) that are not special tokens. Special
  tokens ([CLS], [SEP], a prompt's special tokens, padding) are never repeated, and every token keeps its order;
  each copy sits right after its source, with the source's ``token_type_ids``.
- dup_len is drawn on the closed range above (both ends included), then limited to N (a 1-subword sentence
  can repeat at most that subword) and to ``max_tokens`` minus the row's length (the model's position limit).
- Truncation: the row was truncated to ``data.max_length`` *before* repetition (the sentence the anchor view
  sees), and the repeated row is not truncated again, so it may be up to dup_len tokens longer than
  ``data.max_length`` (ESimCSE's code does the same), never longer than ``max_tokens``.
- Draws come from ``generator`` (torch's global generator by default, which csrl's checkpoints restore), per row:
  one ``randint`` for dup_len, one ``randperm`` for the positions.

ESimCSE's released code differs in small ways: it counts [CLS] and [SEP] in N, draws ``randrange(min(10,
int(dup_rate * N)))`` (upper end excluded, at most 9 copies, none for short rows) and excludes the last content
position from the draw. csrl follows the paper's formula.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import Tensor

FILL = {"attention_mask": 0, "token_type_ids": 0}  # and input_ids: the tokenizer's pad id


def repetition_count(n_content: int, dup_rate: float, generator: torch.Generator | None = None) -> int:
    """dup_len: uniform on {0, ..., max(2, int(dup_rate * n_content))}, then at most ``n_content``."""
    high = max(2, int(dup_rate * n_content))
    drawn = int(torch.randint(0, high + 1, (1,), generator=generator).item())
    return min(drawn, n_content)


def repeat_subwords(
    positions: Sequence[int],
    repeatable: Sequence[bool],
    *,
    dup_rate: float,
    room: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """The source position of every token of the repeated row: ``positions`` (a row's real tokens, in order), with
    each chosen repeatable position listed twice in a row. ``room``: at most this many copies."""
    content = [k for k, ok in enumerate(repeatable) if ok]
    count = repetition_count(len(content), dup_rate, generator)
    if room is not None:
        count = min(count, max(room, 0))
    chosen = {content[int(i)] for i in torch.randperm(len(content), generator=generator)[:count]} if count else set()
    out: list[int] = []
    for k, p in enumerate(positions):
        out.extend((p, p) if k in chosen else (p,))
    return out


def repeat_rows(
    features: dict[str, Tensor],
    rows: range,
    *,
    dup_rate: float,
    special_ids: Collection[int],
    pad_id: int,
    left_padding: bool = False,
    max_tokens: int | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """``features`` (a padded CPU batch: ``input_ids``, ``attention_mask``, optional ``token_type_ids``) with the
    rows ``rows`` word-repeated (:func:`repeat_subwords`); the others unchanged.

    The batch is widened to its longest row: a repeated row is laid out as the tokenizer would (real tokens, then
    padding; the reverse with ``left_padding``) at the width of the longest repeated row, and every row is then
    padded on the right to the common width (as :func:`csrl.train.batches.pad_to_bucket` does: masked columns,
    which no pooler reads). Other feature keys are refused."""
    unknown = set(features) - {"input_ids", *FILL}
    if unknown:
        raise ValueError(f"word repetition cannot rebuild the features {sorted(unknown)}")
    ids, mask = features["input_ids"], features["attention_mask"]
    special = torch.as_tensor(sorted(set(special_ids)), dtype=ids.dtype)
    new_rows: dict[int, list[int]] = {}
    for r in rows:
        positions = [int(p) for p in torch.nonzero(mask[r]).flatten()]
        repeatable = (~torch.isin(ids[r, positions], special)).tolist() if positions else []
        room = None if max_tokens is None else max_tokens - len(positions)
        new_rows[r] = repeat_subwords(positions, repeatable, dup_rate=dup_rate, room=room, generator=generator)
    rep_width = max((len(v) for v in new_rows.values()), default=0)
    width = max(int(ids.shape[1]), rep_width)
    out: dict[str, Tensor] = {}
    for key, value in features.items():
        fill = pad_id if key == "input_ids" else FILL[key]
        wide = torch.full((value.shape[0], width), fill, dtype=value.dtype)
        wide[:, : value.shape[1]] = value
        for r, src in new_rows.items():
            wide[r] = fill
            start = rep_width - len(src) if left_padding else 0
            wide[r, start : start + len(src)] = 1 if key == "attention_mask" else value[r, src]
        out[key] = wide
    return out


__all__ = ["repeat_rows", "repeat_subwords", "repetition_count"]
