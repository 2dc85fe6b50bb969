"""PromptBERT's prompt-based sentence vectors: templates, their token rows, and template denoising.

Jiang et al., "PromptBERT: Improving BERT Sentence Embeddings with Prompts", EMNLP 2022. A template is a
text with one sentence slot ``[X]`` and one ``[MASK]``, e.g. ``This sentence : "[X]" means [MASK] .``; the
sentence is put in the slot and its vector is the last layer's hidden state at the [MASK] position
(pooler ``prompt``, :func:`csrl.models.pooling.token_at`).

**Token rows.** As PromptBERT's code does, the text before the slot (prefix) and after it (suffix, where
``[MASK]`` becomes the tokenizer's own mask token, ``<mask>`` for RoBERTa) are tokenised once, each on its
own and without special tokens; a sentence is tokenised on its own, without special tokens, and truncated;
the row is ``front specials + prefix + sentence + suffix + back specials`` ([CLS] ... [SEP] for BERT). So
truncation shortens the sentence, never the template, and the [MASK] position follows from the sentence's
length. (With WordPiece this equals tokenising the filled-in text; a BPE tokenizer sees the sentence as the
start of a text, without a leading space, which is also what PromptBERT's code feeds RoBERTa.)

**Template denoising** (PromptBERT section 6): the template alone, with an empty slot, still has a [MASK]
state, the template bias; denoising subtracts it, ``h_i - h^_i``. PromptBERT computes h^ with the template's
tokens *at the positions they have in the sentence's row*: the tokens after the slot keep position ids
shifted by the sentence's length n (its released code passes ``position_ids`` with a gap of n), so h^ depends
on n. :meth:`PromptTemplate.bias_positions` gives those ids; the encoder computes one bias per length that
can occur in the batch (:meth:`csrl.models.encoder.Encoder` ``_template_bias``) in the encoder's current
mode: in training with dropout and with gradient (on the fly, as PromptBERT's training), at inference in eval
mode, once per forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from csrl.errors import CsrlError

SLOT = "[X]"
MASK = "[MASK]"
DEFAULT_TEMPLATE = 'This sentence : "[X]" means [MASK] .'
"""PromptBERT's best manual template for BERT (its Table 3), and its evaluation template for BERT."""


@dataclass(frozen=True)
class PromptTemplate:
    """A template as token ids: ``head`` (special tokens in front, then the prefix) comes before the sentence,
    ``tail`` (the suffix, then the special tokens at the back) after it; ``mask_at`` indexes the [MASK] in
    ``head + tail`` (the row of an empty sentence)."""

    text: str
    head: tuple[int, ...]
    tail: tuple[int, ...]
    mask_at: int

    @property
    def length(self) -> int:
        """Tokens of the template alone (the row of an empty sentence)."""
        return len(self.head) + len(self.tail)

    @property
    def mask_after_slot(self) -> bool:
        return self.mask_at >= len(self.head)

    def row(self, sentence_ids: Sequence[int]) -> list[int]:
        """The token row of a sentence given as ids without special tokens."""
        return [*self.head, *sentence_ids, *self.tail]

    def mask_position(self, n: int) -> int:
        """Index of [MASK] in the row of a sentence of ``n`` tokens."""
        return self.mask_at + n if self.mask_after_slot else self.mask_at

    def bias_positions(self, n: int) -> list[int]:
        """Position ids (counted from 0) of the empty-slot row whose tokens sit where they are in the row of a
        sentence of ``n`` tokens: the head at 0.., the tail after a gap of ``n`` (PromptBERT's template bias)."""
        h = len(self.head)
        return [*range(h), *range(h + n, h + n + len(self.tail))]


def template_problem(text: str) -> str | None:
    """What is wrong with a template's text before any tokenizer sees it (the config's check), or None."""
    if text.count(SLOT) != 1 or text.count(MASK) != 1:
        return (
            f"must hold the sentence slot {SLOT} once and {MASK} once (it holds {text.count(SLOT)} and "
            f"{text.count(MASK)}), e.g. '{DEFAULT_TEMPLATE}'"
        )
    return None


def _special_ends(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts in front of and behind one text ([CLS] / [SEP] for BERT)."""
    probe = list(tokenizer(tokenizer.mask_token)["input_ids"])
    if probe.count(tokenizer.mask_token_id) != 1:
        raise CsrlError(f"the tokenizer does not read its own mask token {tokenizer.mask_token!r} as one token")
    i = probe.index(tokenizer.mask_token_id)
    return probe[:i], probe[i + 1 :]


def parse_template(text: str, tokenizer: Any) -> PromptTemplate:
    """The :class:`PromptTemplate` of ``text`` for ``tokenizer``; :class:`CsrlError` for a template without
    exactly one ``[X]`` and one ``[MASK]``, or a tokenizer without a mask token."""
    problem = template_problem(text)
    if problem is not None:
        raise CsrlError(f"prompt template {text!r} {problem}", hint="set model.prompt_template")
    if getattr(tokenizer, "mask_token", None) is None or getattr(tokenizer, "mask_token_id", None) is None:
        raise CsrlError(
            "pooler prompt needs a tokenizer with a mask token (a masked language model such as BERT or RoBERTa); "
            "this model's tokenizer has none",
            hint="use another pooler (e.g. mean) for this model",
        )
    prefix, suffix = text.split(SLOT)
    mask = tokenizer.mask_token

    def ids(piece: str) -> list[int]:
        return list(tokenizer(piece.replace(MASK, mask), add_special_tokens=False)["input_ids"]) if piece else []

    front, back = _special_ends(tokenizer)
    head, tail = [*front, *ids(prefix)], [*ids(suffix), *back]
    found = [i for i, t in enumerate(head + tail) if t == tokenizer.mask_token_id]
    if len(found) != 1:
        raise CsrlError(
            f"prompt template {text!r}: the tokenizer turns it into {len(found)} mask tokens, not one",
            hint=f"write {MASK} once, with spaces around it",
        )
    return PromptTemplate(text, tuple(head), tuple(tail), found[0])


__all__ = ["DEFAULT_TEMPLATE", "MASK", "SLOT", "PromptTemplate", "parse_template", "template_problem"]
