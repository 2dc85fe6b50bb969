"""csrl's negation rule (SNCSE's soft negatives): each rule, its order, case, and the limits it documents."""

from __future__ import annotations

import pytest

from csrl.data.negation import AUXILIARIES, negate


@pytest.mark.parametrize(
    "sentence,expected",
    [
        # rule 1: an existing negation is turned off (the first one only)
        ("She does not like tea.", "She does like tea."),
        ("Not all birds fly.", "All birds fly."),
        ("not now", "now"),
        ("He isn't here, and he is not coming.", "He is here, and he is not coming."),
        ("I can't go", "I can go"),
        ("They won't stop", "They will stop"),
        ("We shan't", "We shall"),
        ("It ain't over", "It is over"),
        ("He didn\u2019t know", "He did know"),  # curly apostrophe
        ("Don't go", "Do go"),
        ("You cannot pass", "You can pass"),
        ("YOU CANNOT PASS", "YOU CAN PASS"),
        ("The knot is tight, but it's not loose", "The knot is tight, but it's loose"),  # whole words only
        # rule 2: "not" after the first auxiliary or copula
        ("The cat is on the mat.", "The cat is not on the mat."),
        ("Birds can fly and fish can swim.", "Birds can not fly and fish can swim."),
        ("Is this the road?", "Is not this the road?"),
        ("THE SKY IS BLUE", "THE SKY IS NOT BLUE"),
        ("They're happy", "They're not happy"),
        ("I\u2019m tired", "I\u2019m not tired"),
        ("We'll see", "We'll not see"),
        ("This island was quiet", "This island was not quiet"),  # "is" inside "This"/"island" is no word
        # rule 3: the prefix, with the first letter lower-cased only for sentence-start function words
        ("The dog runs.", "It is not true that the dog runs."),
        ("A man plays a guitar", "It is not true that a man plays a guitar"),
        ("John runs fast.", "It is not true that John runs fast."),
        ("NASA launched it", "It is not true that NASA launched it"),
        ("people run", "It is not true that people run"),
        ("He did his homework.", "It is not true that he did his homework."),  # do/have left out on purpose
        # whitespace and blank input
        ("  The cat is here.  ", "The cat is not here."),
        ("", "It is not true."),
        ("   ", "It is not true."),
    ],
)
def test_negation_rules(sentence: str, expected: str) -> None:
    assert negate(sentence) == expected


@pytest.mark.parametrize("aux", AUXILIARIES)
def test_every_auxiliary_of_the_list(aux: str) -> None:
    assert negate(f"they {aux} go") == f"they {aux} not go"
    assert negate(f"They {aux.capitalize()} go") == f"They {aux.capitalize()} not go"


def test_negating_twice() -> None:
    for s in ("The cat is on the mat.", "They're happy", "Birds can fly."):  # rule 2 then rule 1: back
        assert negate(negate(s)) == s
    # rule 1 leaves "does" (not on rule 2's list), so the second negation is rule 3's
    assert negate(negate("She does not like tea.")) == "It is not true that she does like tea."
    # rule 3's prefix holds "not", which rule 1 turns off
    assert negate(negate("The dog runs.")) == "It is true that the dog runs."
