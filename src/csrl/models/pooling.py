"""Poolers: one small function per pooler, over a backbone's outputs.

Names follow what each computes; SimCSE's names are accepted as aliases.

| csrl name           | SimCSE name          | computes                                                      |
|---------------------|----------------------|---------------------------------------------------------------|
| ``cls``             | ``cls``              | last-layer [CLS]; the training head is applied after it        |
| ``cls_before_pooler`` | ``cls_before_pooler`` | last-layer [CLS], never a head                              |
| ``mean``            | ``avg``              | mask-aware mean of the last layer                             |
| ``first_last_avg``  | ``avg_first_last``   | mean of the token averages of hidden_states[1] and the last   |
| ``last2_avg``       | ``avg_top2``         | mean of the token averages of the last two layers             |
| ``max``             |                      | per-dimension max over the last layer's tokens                |
| ``mean_sqrt_len``   |                      | sum of the last layer's tokens / sqrt(number of tokens)       |
| ``weightedmean``    |                      | last-layer tokens weighted by position 1..T (SGPT)            |
| ``lasttoken``       |                      | the last real token of the last layer (decoder models)        |
| ``prompt``          | alias ``mask``       | the last layer's state at a template's [MASK] (PromptBERT)  |

The last four are sentence-transformers' ``Pooling`` modes (``max``, ``mean_sqrt_len_tokens``,
``weightedmean``, ``lasttoken``), computed the same way, so a sentence-transformers folder that uses
them loads with the embeddings ``SentenceTransformer.encode`` gives. "[CLS]" is the first token the
mask keeps (position 0 with right padding, as everywhere in csrl).

``first_last_avg`` uses hidden_states index 1 (first transformer layer) and -1, as SimCSE's current
code does (its README notes the paper used the embedding layer, index 0); ``first_last_layers``
overrides the pair explicitly.

``prompt`` (alias ``mask``) is PromptBERT's pooler (Jiang et al., EMNLP 2022): the sentence is put into a
template such as ``This sentence : "[X]" means [MASK] .`` and its vector is the hidden state at the template's
[MASK] (:func:`token_at`). The template's token rows, the [MASK] positions and the optional template
denoising are the encoder's (:mod:`csrl.models.prompt`); here the pooler only picks the rows' [MASK] states.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from csrl.errors import CsrlError

POOLERS = (
    "cls",
    "cls_before_pooler",
    "mean",
    "first_last_avg",
    "last2_avg",
    "max",
    "mean_sqrt_len",
    "weightedmean",
    "lasttoken",
    "prompt",
)
ALIASES = {"avg": "mean", "avg_first_last": "first_last_avg", "avg_top2": "last2_avg", "mask": "prompt"}


def canonical_pooler(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in POOLERS:
        raise CsrlError(
            f"unknown pooler {name!r}",
            hint=f"valid poolers: {', '.join(POOLERS)} (SimCSE aliases: {', '.join(ALIASES)})",
        )
    return name


def needs_all_layers(pooler: str) -> bool:
    return canonical_pooler(pooler) in ("first_last_avg", "last2_avg")


def masked_mean(states: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B, D): mean over non-padding tokens."""
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp_min(1e-9)


def exclude_prefix(mask: Tensor, n: int) -> Tensor:
    """A copy of the (B, T) attention mask with each row's first ``n`` real tokens set to 0 (a prompt left
    out of pooling); left padding is skipped over, as sentence-transformers' ``include_prompt=False`` does."""
    out = mask.clone()
    pad = mask.to(torch.int32).argmax(dim=1)  # 0 for every row under right padding
    positions = torch.arange(mask.shape[1], device=mask.device)[None, :]
    out[positions < (pad + n)[:, None]] = 0
    return out


def first_token(states: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B, D): the first token the mask keeps ([CLS] under right padding)."""
    index = mask.to(torch.int).argmax(dim=1)
    return states[torch.arange(states.shape[0], device=states.device), index]


def last_token(states: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B, D): the last token the mask keeps (left or right padding); zeros if none."""
    seq_len = states.shape[1]
    kept, from_end = mask.flip(1).max(1)
    from_end = torch.where(kept == 0, seq_len - 1, from_end)
    masked = states * mask.unsqueeze(-1).to(states.dtype)
    return masked[torch.arange(states.shape[0], device=states.device), seq_len - 1 - from_end]


def token_at(states: Tensor, index: Tensor) -> Tensor:
    """(B, T, D), (B,) -> (B, D): row b's state at position ``index[b]`` (the [MASK] of a prompt template)."""
    return states[torch.arange(states.shape[0], device=states.device), index]


def masked_max(states: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B, D): per-dimension max over non-padding tokens."""
    return states.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values


def masked_sqrt_len_mean(states: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D), (B, T) -> (B, D): sum over non-padding tokens / sqrt(their number)."""
    m = mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / torch.sqrt(m.sum(1).clamp_min(1e-9))


def position_weighted_mean(states: Tensor, mask: Tensor, padding_mask: Tensor | None = None) -> Tensor:
    """(B, T, D), (B, T) -> (B, D): sum_t w_t h_t / sum_t w_t with w_t = position (1..T) where the mask keeps t.

    Positions count from the first non-padding token of ``padding_mask`` (default ``mask``), so tokens
    excluded from ``mask`` (a prompt) keep the weights of their original positions.
    """
    base = mask if padding_mask is None else padding_mask
    weights = torch.arange(1, states.shape[1] + 1, device=states.device, dtype=states.dtype)[None, :]
    weights = weights - base.to(torch.int32).argmax(dim=1, keepdim=True).to(states.dtype)
    w = (mask.to(states.dtype) * weights).unsqueeze(-1)
    return (states * w).sum(1) / w.sum(1).clamp_min(1e-9)


def pool(
    pooler: str,
    hidden_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    first_last_layers: tuple[int, int] = (1, -1),
    padding_mask: Tensor | None = None,
    token_index: Tensor | None = None,
) -> Tensor:
    """Pool token states to one vector per sentence.

    hidden_states: per layer (B, T, D), index 0 = embedding output, -1 = last layer. attention_mask:
    (B, T), the tokens pooled (a prompt excluded from pooling is zero here); padding_mask: the
    tokenizer's mask when it differs (only ``weightedmean`` reads it, for positions); token_index: (B,)
    the [MASK] position of each row (``prompt`` only, required there).
    """
    name = canonical_pooler(pooler)
    last = hidden_states[-1]
    if name == "prompt":
        if token_index is None:
            raise ValueError("pooler prompt needs token_index: the [MASK] position of each row")
        return token_at(last, token_index)
    if name in ("cls", "cls_before_pooler"):
        return first_token(last, attention_mask)
    if name == "mean":
        return masked_mean(last, attention_mask)
    if name == "max":
        return masked_max(last, attention_mask)
    if name == "mean_sqrt_len":
        return masked_sqrt_len_mean(last, attention_mask)
    if name == "weightedmean":
        return position_weighted_mean(last, attention_mask, padding_mask)
    if name == "lasttoken":
        return last_token(last, attention_mask)
    if name == "first_last_avg":
        a, b = first_last_layers
        return (masked_mean(hidden_states[a], attention_mask) + masked_mean(hidden_states[b], attention_mask)) / 2
    # last2_avg
    return (masked_mean(hidden_states[-2], attention_mask) + masked_mean(last, attention_mask)) / 2
