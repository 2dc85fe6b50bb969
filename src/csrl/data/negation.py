"""Rule-based sentence negation: SNCSE's soft negatives (Wang et al., 2022).

SNCSE takes the negation of each training sentence as a *soft negative*: nearly the same text, a different
meaning. Its authors negate with a dependency parser (spaCy); csrl uses a parser-free rule of its own, so
the training data needs no model and every sentence's negation is reproducible from this file alone.

:func:`negate` applies the first rule that matches (words are matched whole and case-insensitively):

1. **A negation is turned off.** The first negation of the sentence is removed: the word ``not`` (with the
   space before it, or after it at the start of the sentence, whose capital passes to the next word:
   ``Not all birds fly.`` -> ``All birds fly.``); ``cannot`` becomes ``can``; a contraction in
   ``n't`` loses it (``isn't`` -> ``is``, ``doesn't`` -> ``does``, ``couldn't`` -> ``could``), with the
   irregular ``can't`` -> ``can``, ``won't`` -> ``will``, ``shan't`` -> ``shall``, ``ain't`` -> ``is``.
   Straight and curly apostrophes alike.
2. **Otherwise ``not`` is inserted after the first auxiliary or copula verb**, one of ``am is are was were
   can could will would shall should may might must`` (SNCSE's list) or the contractions ``'m 're 'll``
   (``they're`` -> ``they're not``): ``The cat is on the mat.`` -> ``The cat is not on the mat.``
3. **Otherwise the sentence is prefixed** with ``It is not true that``; its first letter is lower-cased
   only when its first word is one of :data:`LOWER_STARTERS` (articles, pronouns, demonstratives), whose
   capital is only the sentence's: ``The dog runs.`` -> ``It is not true that the dog runs.``, while
   ``Paris is big`` is caught by rule 2 and ``John runs`` keeps its capital.

A blank sentence becomes ``It is not true.`` Limits, as for any rule without a parser: rule 2 takes the
first auxiliary wherever it is (``The man who is tall runs`` negates the relative clause), and the verbs
``do``/``have`` are left out because they are main verbs as often as auxiliaries (``He did his homework``
would become ungrammatical); such sentences fall to rule 3. A word of the list used as a noun (``a tin
can``, the month ``May``) is taken for an auxiliary.
"""

from __future__ import annotations

import re

AUXILIARIES = ("am", "is", "are", "was", "were", "can", "could", "will", "would", "shall", "should", "may",
               "might", "must")  # fmt: skip
"""Rule 2's words (SNCSE's list of auxiliaries and copulas), matched whole and case-insensitively."""
CONTRACTED_AUXILIARIES = ("'m", "'re", "'ll")
PREFIX = "It is not true that"
LOWER_STARTERS = frozenset(
    "the a an this that these those it he she they we there his her its their our my your some many most all "
    "each every no one".split()
)
"""First words whose capital only marks the sentence start: rule 3 lower-cases them after its prefix."""

_APOSTROPHE = "['\u2019]"
_IRREGULAR = {"ca": "can", "wo": "will", "sha": "shall", "ai": "is"}
_NEGATION = re.compile(
    rf"(?P<not>\bnot\b)|(?P<cannot>\bcannot\b)|(?P<stem>\b[A-Za-z]+)n{_APOSTROPHE}t\b", re.IGNORECASE
)
_AUXILIARY = re.compile(rf"\b(?:{'|'.join(AUXILIARIES)})\b|(?<=[A-Za-z]){_APOSTROPHE}(?:m|re|ll)\b", re.IGNORECASE)


def _match_case(word: str, like: str) -> str:
    """``word`` written with the capital of ``like`` (``Can``, ``CAN``, ``can``)."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def _turn_off(sentence: str, m: re.Match[str]) -> str:
    """Rule 1: the negation matched by ``m`` removed."""
    start, end = m.span()
    if m.group("not") is not None:
        if start > 0 and sentence[start - 1] == " ":
            return sentence[: start - 1] + sentence[end:]
        rest = sentence[end:].lstrip(" ")
        return sentence[:start] + (_match_case(rest[:1], m.group("not")) + rest[1:] if rest else "")
    if m.group("cannot") is not None:
        return sentence[:start] + _match_case("can", m.group("cannot")) + sentence[end:]
    stem = m.group("stem")
    word = _match_case(_IRREGULAR[stem.lower()], stem) if stem.lower() in _IRREGULAR else stem
    return sentence[:start] + word + sentence[end:]


def negate(sentence: str) -> str:
    """The sentence's negation by the module's rules (turn a negation off, else ``not`` after the first
    auxiliary, else ``It is not true that ...``); surrounding whitespace is dropped."""
    text = sentence.strip()
    if not text:
        return f"{PREFIX.removesuffix(' that')}."
    m = _NEGATION.search(text)
    if m is not None:
        return _turn_off(text, m)
    m = _AUXILIARY.search(text)
    if m is not None:
        word = "NOT" if m.group().isupper() and len(m.group()) > 1 else "not"  # IS -> IS NOT; Is, 'm -> not
        return f"{text[: m.end()]} {word}{text[m.end() :]}"
    first = text.split(maxsplit=1)[0]
    lower = first.lower() in LOWER_STARTERS and first[:1].isupper() and not (first.isupper() and len(first) > 1)
    return f"{PREFIX} {text[:1].lower() + text[1:] if lower else text}"


__all__ = ["AUXILIARIES", "CONTRACTED_AUXILIARIES", "LOWER_STARTERS", "PREFIX", "negate"]
