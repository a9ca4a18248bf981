"""Classifier behaviour: categories, evasions, the queue and protection flags, and that the
delivered text is never touched."""

# Lookalike characters (Cyrillic, Greek, fullwidth) in these strings are the point of the test.
# ruff: noqa: RUF001

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anygle.moderation import CLEAN, Classifier, Severity, Verdict
from tests.conftest import shared_classifier


@pytest.fixture
def clf(packaged_rules: Classifier) -> Classifier:
    return packaged_rules


def teen(clf: Classifier, text: str) -> Verdict:
    return clf.classify(text, protect_personal_info=True, moderated=True)


def adult(clf: Classifier, text: str) -> Verdict:
    return clf.classify(text, protect_personal_info=False, moderated=True)


def unmoderated(clf: Classifier, text: str) -> Verdict:
    return clf.classify(text, protect_personal_info=False, moderated=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "category", "severity"),
    [
        ("anyone trading cp?", "csam_solicitation", Severity.ZERO),
        ("13 year old girls are so sexy", "minor_sexual", Severity.ZERO),
        ("i will kill you", "violent_threat", Severity.HIGH),
        ("i know where you live", "doxing", Severity.HIGH),
        ("her number is 415-892-3371 call her", "doxing", Severity.HIGH),
        ("kill yourself", "harassment", Severity.MEDIUM),
        ("you're such a faggot", "slur", Severity.MEDIUM),
        ("send nudes", "sexual_explicit", Severity.MEDIUM),
        ("fuck this game", "profanity", Severity.LOW),
        ("you're an idiot", "insult", Severity.LOW),
    ],
)
def test_categories(clf: Classifier, text: str, category: str, severity: Severity) -> None:
    v = adult(clf, text)
    assert (v.category, v.severity) == (category, severity)
    assert v.evidence


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("i will k1ll you", "violent_threat"),  # leetspeak
        ("ill k i l l u", "violent_threat"),  # spaced letters
        ("i wіll kіll yоu", "violent_threat"),  # Cyrillic lookalikes
        ("i'll kiiiill youuu", "violent_threat"),  # repeated letters
        ("i will ki\u200cll you", "violent_threat"),  # zero-width joiner
        ("ｉ ｗｉｌｌ ｋｉｌｌ ｙｏｕ", "violent_threat"),  # fullwidth
        ("f.u.c.k", "profanity"),
        ("f*ck", "profanity"),
        ("fυck", "profanity"),  # Greek upsilon
        ("\u202efuck\u202c", "profanity"),  # bidi override
        ("\U0001d41f\U0001d42e\U0001d41c\U0001d424 this", "profanity"),  # maths bold
        ("s3nd n00dz", "sexual_explicit"),
        ("n-u-d-e-s pls", "sexual_explicit"),
    ],
)
def test_evasions(clf: Classifier, text: str, category: str) -> None:
    assert adult(clf, text).category == category


@pytest.mark.parametrize(
    "text",
    [
        "i need to finish my assessment",
        "I grew up in Scunthorpe",
        "classic rock is the best",
        "My therapist says hi",
        "I made a cocktail",
        "pu sh it to the limit",
        "r u ok?",
        "c u later",
        "this homework is killing me",
        "I'd kill for a pizza",
        "my mom is going to kill me",
        "im gonna beat you in mario kart",
        "She graduated summa cum laude",
        "There's a chink in his armour",
        "Niger is a country in West Africa",
        "we had sex ed today",
        "The naked mole rat is weird",
        "im 13 and i just started middle school",
        "My nephew is 7 and loves trains",
        "Use cp to copy files on Linux",
        "i'm such an idiot lol",
        "the score was 21 to 17",
        "I paid 1,250,000 yen",
        "my high score is 1048576 in 2048",
        "one two three go!",
    ],
)
def test_innocent_traps(clf: Classifier, text: str) -> None:
    assert teen(clf, text) == CLEAN


@pytest.mark.parametrize(
    "text",
    [
        "my number is 415 892 3371",
        "my number is four one five eight nine two three three seven one",
        "④①⑤ ⑧⑨② ③③⑦①",
        "４１５−８９２−３３７１",
        "my number is \u0664\u0661\u0665 \u0668\u0669\u0662 \u0663\u0663\u0667\u0661",
        "+44 7700 900123 is my cell",
        "jess at gmail dot com",
        "jess(at)hotmail(dot)com",
        "my email is jess.w2009@gmail.com",
        "I live at 24 Birch Lane",
        "add me on snap: jessy_22",
        "add me on s.n.a.p",
        "sn@p me",
        "my insta is @jess.w",
        "add me on discord jess#4821",
        "discord.gg/abc123",
        "whats ur snap",
        "my full name is Jessica Wong",
    ],
)
def test_personal_info_blocked_for_protected_users(clf: Classifier, text: str) -> None:
    v = teen(clf, text)
    assert (v.category, v.severity) == ("personal_info", Severity.HIGH)
    assert adult(clf, text) == CLEAN  # adults may share their own contact details


def test_links_blocked_for_protected_users(clf: Classifier) -> None:
    v = teen(clf, "check out https://example.org/page")
    assert (v.category, v.severity) == ("link", Severity.HIGH)
    assert adult(clf, "check out https://example.org/page") == CLEAN


def test_unmoderated_queue_only_zero_tolerance_and_doxing(clf: Classifier) -> None:
    assert unmoderated(clf, "fuck this").severity is Severity.CLEAN
    assert unmoderated(clf, "you're such a faggot") == CLEAN
    assert unmoderated(clf, "i will kill you") == CLEAN
    assert unmoderated(clf, "send nudes") == CLEAN
    assert unmoderated(clf, "anyone trading cp?").category == "csam_solicitation"
    assert unmoderated(clf, "i know where you live").category == "doxing"
    assert unmoderated(clf, "his address is 42 Elm Street").category == "doxing"
    # protected users' own details are not doxing; the flag is ignored in this queue
    assert (
        clf.classify("my number is 415 892 3371", protect_personal_info=True, moderated=False)
        == CLEAN
    )


def test_most_severe_finding_wins(clf: Classifier) -> None:
    v = adult(clf, "fuck you, i will kill you")
    assert v.category == "violent_threat"
    assert adult(clf, "fucking 12 year old sluts send nudes").severity is Severity.ZERO


def test_wire_severity() -> None:
    assert Severity.CLEAN.wire is None
    assert [s.wire for s in (Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.ZERO)] == [
        "low", "medium", "high", "high"
    ]  # fmt: skip


def test_text_is_not_modified(clf: Classifier) -> None:
    text = "Ｆ.u.c.k ｙｏｕ \u200b1d10t"
    copy = str(text)
    teen(clf, text)
    assert text == copy


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    clf = _shared()
    for protect in (True, False):
        for moderated in (True, False):
            v = clf.classify(text, protect_personal_info=protect, moderated=moderated)
            assert isinstance(v, Verdict)
            assert (v.category is None) == (v.severity is Severity.CLEAN)


def _shared() -> Classifier:
    return shared_classifier()


@pytest.mark.parametrize(
    "text",
    [
        "f*" * 8000,
        "a " * 8000,
        "4158923371 x " * 1200,
        "i will " * 2200 + "kill",
        "a.b" * 5000,
        "kid " * 4000 + "sex",
    ],
    ids=["masked", "letters", "phones", "subject", "dots", "near"],
)
def test_cost_is_bounded_on_adversarial_16kb_messages(clf: Classifier, text: str) -> None:
    """A 16 KB message (the protocol's limit) must never take long, whatever it contains.
    The bound is loose on purpose (shared CI machines); typical cost is a few milliseconds."""

    start = time.thread_time()
    teen(clf, text[:16384])
    assert time.thread_time() - start < 0.1
