"""Poolers: one small function per pooler, over a backbone's outputs.

Names follow what each computes; SimCSE's names are accepted as aliases.

| csrl name           | SimCSE name          | computes                                                      |
|---------------------|----------------------|---------------------------------------------------------------|
| ``cls``             | ``cls``              | last-layer [CLS]; the training head is applied after it        |
| ``cls_before_pooler`` | ``cls_before_pooler`` | last-layer [CLS], never a head                              |
| ``mean``            | ``avg``              | mask-aware mean of the last layer                             |
| ``first_last_avg``  | ``avg_first_last``   | mean of the token averages of hidden_states[1] and the last   |
| ``last2_avg``       | ``avg_top2``         | mean of the token averages of the last two layers             |

``first_last_avg`` uses hidden_states index 1 (first transformer layer) and -1, as SimCSE's current
code does (its README notes the paper used the embedding layer, index 0); ``first_last_layers``
overrides the pair explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from csrl.errors import CsrlError

POOLERS = ("cls", "cls_before_pooler", "mean", "first_last_avg", "last2_avg")
ALIASES = {"avg": "mean", "avg_first_last": "first_last_avg", "avg_top2": "last2_avg"}


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


def pool(
    pooler: str,
    hidden_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    first_last_layers: tuple[int, int] = (1, -1),
) -> Tensor:
    """Pool token states to one vector per sentence.

    hidden_states: per layer (B, T, D), index 0 = embedding output, -1 = last layer.
    """
    name = canonical_pooler(pooler)
    last = hidden_states[-1]
    if name in ("cls", "cls_before_pooler"):
        return last[:, 0]
    if name == "mean":
        return masked_mean(last, attention_mask)
    if name == "first_last_avg":
        a, b = first_last_layers
        return (masked_mean(hidden_states[a], attention_mask) + masked_mean(hidden_states[b], attention_mask)) / 2
    # last2_avg
    return (masked_mean(hidden_states[-2], attention_mask) + masked_mean(last, attention_mask)) / 2
