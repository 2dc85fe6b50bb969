"""Functional vs content tokens, for paper A's "spurious contextualisation" split.

Wording: "function words" are the closed-class English words of the bundled list; "functional tokens"
are the token kind built from them, which also takes punctuation and special tokens. Three kinds of
token id:

- functional: the bundled function words (``resources/function_words.txt``), pure
  punctuation/symbol tokens, and the tokenizer's special tokens ([CLS], [SEP], <s>, ...);
- content: any other alphabetic whole-word token;
- other: word continuations (WordPiece ``##`` pieces), numbers, mixed tokens. They count in neither group.

Subword marks of BPE/SentencePiece vocabularies (a leading ``Ġ`` or ``▁``) are stripped before the test,
so a RoBERTa ``Ġthe`` is functional; BPE pieces that continue a word carry no mark and are classified as
if they were words (a known limitation; WordPiece vocabularies are exact).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Collection, Sequence
from functools import lru_cache
from importlib import resources
from typing import Any

import torch
from torch import Tensor

OTHER, FUNCTIONAL, CONTENT = 0, 1, 2
KIND_NAMES = {OTHER: "other", FUNCTIONAL: "functional", CONTENT: "content"}

_WORD_START_MARKS = ("Ġ", "▁")
_CONTINUATION_PREFIX = "##"
# "[CLS]", "[unused3]", "<s>", "</s>", "<pad>", "<|endoftext|>": what tokenizers use for special tokens
_SPECIAL_PATTERN = re.compile(r"^(\[[^\[\]\s]+\]|<[^<>\s]+>)$")

IdToToken = Sequence[str] | Callable[[int], str]


@lru_cache(maxsize=1)
def _bundled_words() -> frozenset[str]:
    text = resources.files("csrl.analysis").joinpath("resources/function_words.txt").read_text("utf-8")
    return parse_word_list(text)


def parse_word_list(text: str) -> frozenset[str]:
    """One word per line; ``#`` starts a comment; blank lines ignored; words lower-cased."""
    words = (line.split("#", 1)[0].strip().lower() for line in text.splitlines())
    return frozenset(w for w in words if w)


def load_functional_words() -> frozenset[str]:
    """The bundled English function words, lower case (~330: determiners, pronouns, prepositions,
    conjunctions, auxiliaries and modals, contraction pieces, particles and function adverbs); the word
    part of the functional kind."""
    return _bundled_words()


def is_punctuation(token: str) -> bool:
    """True when every character is Unicode punctuation (P*) or symbol (S*), e.g. ``.``, ``--``, ``$``."""
    return bool(token) and all(unicodedata.category(ch)[0] in "PS" for ch in token)


def looks_special(token: str) -> bool:
    """Heuristic for special tokens when the tokenizer's list is not given: ``[XXX]`` or ``<xxx>``."""
    return bool(_SPECIAL_PATTERN.match(token))


def classify_token(token: str, functional: Collection[str], special_tokens: Collection[str] | None = None) -> int:
    """Kind of one vocabulary entry: ``FUNCTIONAL`` (1), ``CONTENT`` (2) or ``OTHER`` (0).

    ``functional`` holds lower-case function words; ``special_tokens`` the tokenizer's special tokens
    (``tokenizer.all_special_tokens``); ``None`` falls back to :func:`looks_special`.
    """
    if (token in special_tokens) if special_tokens is not None else looks_special(token):
        return FUNCTIONAL
    if token.startswith(_CONTINUATION_PREFIX) and len(token) > len(_CONTINUATION_PREFIX):
        return OTHER
    word = token
    for mark in _WORD_START_MARKS:
        if word.startswith(mark):
            word = word[len(mark) :]
            break
    if not word:
        return OTHER
    if is_punctuation(word) or word.lower() in functional:
        return FUNCTIONAL
    if word.isalpha():
        return CONTENT
    return OTHER


def token_kinds(
    ids: Tensor,
    id_to_token: IdToToken,
    *,
    functional: Collection[str] | None = None,
    special_tokens: Collection[str] | None = None,
) -> Tensor:
    """Kinds (int64, same shape as ``ids``) of token ids, via a vocabulary list or an id -> token callable.

    functional: lower-case function words; ``None`` = :func:`load_functional_words`.
    """
    words = load_functional_words() if functional is None else {w.lower() for w in functional}
    specials = None if special_tokens is None else set(special_tokens)
    lookup: Callable[[int], str] = id_to_token if callable(id_to_token) else id_to_token.__getitem__
    kinds = [classify_token(lookup(i), words, specials) for i in ids.reshape(-1).tolist()]
    return torch.tensor(kinds, dtype=torch.long).reshape(ids.shape)


def tokenizer_vocab(tokenizer: Any) -> tuple[list[str], list[str] | None]:
    """(id -> token list, special tokens or None) of a Hugging Face tokenizer, the inputs of :func:`token_kinds`."""
    vocab = [str(t) for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
    special = [str(t) for t in getattr(tokenizer, "all_special_tokens", [])] or None
    return vocab, special
