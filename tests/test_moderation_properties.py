"""Property tests: evasion transformations must not change a verdict's category."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anygle.moderation import Classifier, SenderWindow, Verdict
from tests.conftest import shared_classifier

SAMPLES = [
    ("i will kill you", "violent_threat"),
    ("anyone trading cp", "csam_solicitation"),
    ("13 year old girls are sexy", "minor_sexual"),
    ("kill yourself", "harassment"),
    ("send nudes", "sexual_explicit"),
    ("fuck this", "profanity"),
    ("you are an idiot", "insult"),
    ("i know where you live", "doxing"),
]
LOOKALIKES = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "i": "\u0456", "c": "\u0441",
              "p": "\u0440", "x": "\u0445", "y": "\u0443", "s": "\u0455"}  # fmt: skip
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]


def clf() -> Classifier:
    return shared_classifier()


def category(text: str) -> str | None:
    return clf().classify(text, protect_personal_info=False, moderated=True).category


@pytest.mark.slow
@pytest.mark.parametrize(("text", "expected"), SAMPLES)
def test_samples(text: str, expected: str) -> None:
    assert category(text) == expected


def invisible(ch: str, data: st.DataObject) -> str:
    """Some letters followed by a zero-width character (or a soft hyphen)."""
    if ch.isalpha() and data.draw(st.booleans()):
        return ch + data.draw(st.sampled_from(INVISIBLE))
    return ch


def lookalikes_and_case(ch: str, data: st.DataObject) -> str:
    """Some letters swapped for their Cyrillic lookalikes, some upper-cased."""
    if ch in LOOKALIKES and data.draw(st.booleans()):
        ch = LOOKALIKES[ch]
    return ch.upper() if data.draw(st.booleans()) else ch


def repeated_letters(ch: str, data: st.DataObject) -> str:
    """Every letter written one to four times."""
    return ch * data.draw(st.integers(1, 4)) if ch.isalpha() else ch


def holds_under(disguise: Callable[[str, st.DataObject], str]) -> Callable[..., None]:
    """A property test: every sample, each character ``disguise``d, keeps its category.  One
    function per disguise, not ``parametrize``: pytest-twisted wraps a Hypothesis test's inner
    function in place, and the items of a parametrized test share it."""

    @settings(max_examples=40, deadline=None)
    @given(st.sampled_from(SAMPLES), st.data())
    def test(sample: tuple[str, str], data: st.DataObject) -> None:
        text, expected = sample
        assert category("".join(disguise(ch, data) for ch in text)) == expected

    return test


test_invisible_characters_do_not_matter = holds_under(invisible)
test_lookalikes_and_case_do_not_matter = holds_under(lookalikes_and_case)
test_repeated_letters_do_not_matter = holds_under(repeated_letters)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=12), st.booleans(), st.booleans())
def test_window_never_raises(messages: list[str], teen: bool, moderated: bool) -> None:
    w = SenderWindow(clf())
    for i, m in enumerate(messages):
        v = w.check(m, float(i), protect_personal_info=teen, moderated=moderated)
        assert isinstance(v, Verdict)
