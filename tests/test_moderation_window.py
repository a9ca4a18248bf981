"""SenderWindow: split contact details and grooming scored across messages."""

from __future__ import annotations

import pytest

from anygle.moderation import CLEAN, Classifier, SenderWindow, Severity, Verdict


@pytest.fixture
def clf(rules_only: Classifier) -> Classifier:
    """The rules alone: these tests are about the window's own mechanisms (the learned layer
    has its own tests in test_moderation_learned.py)."""
    return rules_only


def feed(
    window: SenderWindow,
    messages: list[str],
    *,
    teen: bool = True,
    step: float = 1.0,
    start: float = 0.0,
) -> list[Verdict]:
    return [
        window.check(m, start + i * step, protect_personal_info=teen, moderated=True)
        for i, m in enumerate(messages)
    ]


@pytest.mark.slow
def test_phone_split_over_three_messages(clf: Classifier) -> None:
    verdicts = feed(SenderWindow(clf), ["my number is 415", "892", "3371"])
    assert verdicts[:2] == [CLEAN, CLEAN]
    assert (verdicts[2].category, verdicts[2].severity) == ("personal_info", Severity.HIGH)


def test_handle_spelled_letter_by_letter(clf: Classifier) -> None:
    verdicts = feed(SenderWindow(clf), ["add me on", "s", "n", "a", "p"])
    assert verdicts[-1].category == "personal_info"
    assert not any(verdicts[:-1])


def test_split_doxing_applies_to_adults_and_unmoderated(clf: Classifier) -> None:
    w = SenderWindow(clf)
    got = [
        w.check(m, float(i), protect_personal_info=False, moderated=False)
        for i, m in enumerate(["his number is 415", "892", "3371"])
    ]
    assert got[-1].category == "doxing"


def test_phone_split_in_pairs_of_digits_and_in_words(clf: Classifier) -> None:
    pairs = feed(SenderWindow(clf), ["call me", "41", "58", "92", "33", "71"])
    assert "personal_info" in {v.category for v in pairs[1:]}
    words = feed(SenderWindow(clf), ["my number is", "four one five", "eight nine two", "3371"])
    assert words[-1].category == "personal_info"


def test_ordinary_short_lines_are_not_joined(clf: Classifier, monkeypatch) -> None:
    """Ages, "u", "i", "r" and the tails of contractions are chat, not pieces of contact
    details: such lines are not joined with the earlier ones and checked again (that second
    check was the largest cost of a teen chat message)."""
    joins: list[str] = []
    original = SenderWindow._joined

    def counting(self: SenderWindow, text: str) -> str | None:
        joins.append(text)
        return original(self, text)

    monkeypatch.setattr(SenderWindow, "_joined", counting)
    lines = ["hey", "15 u?", "it's ok", "i'm bored", "r u there", "16 f", "don't know", "k"]
    assert feed(SenderWindow(clf), lines) == [CLEAN] * len(lines)
    assert joins == []
    feed(SenderWindow(clf), ["hey", "my snap is"])
    assert joins == ["my snap is"]


def test_old_finding_does_not_block_later_innocent_messages(clf: Classifier) -> None:
    verdicts = feed(SenderWindow(clf), ["my number is 415 892 3371", "ok", "lol", "cool"])
    assert verdicts[0].category == "personal_info"
    assert verdicts[1:] == [CLEAN, CLEAN, CLEAN]


def test_split_parts_expire(clf: Classifier) -> None:
    w = SenderWindow(clf, max_age=60.0)
    assert feed(w, ["my number is 415", "892"], step=100.0) == [CLEAN, CLEAN]
    assert w.check("3371", 250.0, protect_personal_info=True, moderated=True) == CLEAN


def test_flattery_then_a_probe_is_stopped_at_the_second_move(clf: Classifier) -> None:
    """A grey move passes (its recipient gets a safety notice); the next move is blocked on the
    conversation's evidence, which counts as a strike."""
    w = SenderWindow(clf)
    verdicts = feed(w, ["how old are you?", "cool", "you're so mature for your age"])
    assert verdicts[:2] == [CLEAN, CLEAN]
    assert not verdicts[2] and verdicts[2].notice == "grooming"
    (v,) = feed(w, ["is anyone else home with you?"], start=3.0)
    assert (v.category, v.severity, v.basis) == ("grooming", Severity.HIGH, "conversation")


def test_mild_signals_alone_never_block(clf: Classifier) -> None:
    w = SenderWindow(clf)
    verdicts = feed(w, ["how old are you?", "do u have a bf", "lol same"])
    assert not any(verdicts)


def test_a_new_chat_starts_from_nothing(clf: Classifier) -> None:
    w = SenderWindow(clf)
    assert w.check("ur so mature for ur age", 0.0, protect_personal_info=True, moderated=True,
                   chat="r1").notice == "grooming"  # fmt: skip
    assert w.conversation_score(0.0) >= 2
    v = w.check("hey", 1.0, protect_personal_info=True, moderated=True, chat="r2")
    assert v == CLEAN and w.conversation_score(1.0) == 0


def test_one_clear_move_blocks_without_a_strike(clf: Classifier) -> None:
    (v,) = feed(SenderWindow(clf), ["don't tell your parents about this"])
    assert (v.category, v.severity, v.basis) == ("grooming", Severity.HIGH, "signal")


@pytest.mark.parametrize(
    "text",
    [
        "are you home alone right now?",
        "don't tell your parents about this",
        "what school do you go to",
        "we should hang out irl sometime",
        "lets move to dms",
        "can u turn ur camera on",
    ],
)
def test_one_strong_signal_is_grooming_with_a_teen(clf: Classifier, text: str) -> None:
    (v,) = feed(SenderWindow(clf), [text])
    assert (v.category, v.severity) == ("grooming", Severity.HIGH)


@pytest.mark.parametrize(
    "text",
    [
        "my mom is home so i cant be loud",
        "i'm home alone tonight, gonna watch horror movies",
        "i never turn my camera on, too awkward",
        "what school subject do you like most",
        "where are you from? i'm from canada",
        "i video call my grandma every sunday",
    ],
)
def test_a_teen_talking_about_themselves_is_not_a_signal(clf: Classifier, text: str) -> None:
    assert feed(SenderWindow(clf), [text]) == [CLEAN]


def test_one_strong_signal_is_not_enough_between_adults(clf: Classifier) -> None:
    w = SenderWindow(clf)
    assert feed(w, ["wanna meet up sometime?"], teen=False) == [CLEAN]
    verdicts = feed(SenderWindow(clf), ["how old are you?", "are you home alone?"], teen=False)
    assert (verdicts[1].category, verdicts[1].severity) == ("grooming", Severity.MEDIUM)


def test_two_weak_signals_are_not_grooming_between_adults(clf: Classifier) -> None:
    verdicts = feed(SenderWindow(clf), ["how old are you?", "you're so pretty"], teen=False)
    assert verdicts == [CLEAN, CLEAN]


def test_grooming_not_applied_in_unmoderated_queue(clf: Classifier) -> None:
    w = SenderWindow(clf)
    for i, m in enumerate(["how old are you?", "are you home alone?"]):
        assert w.check(m, float(i), protect_personal_info=False, moderated=False) == CLEAN


def test_one_signal_type_counts_once(clf: Classifier) -> None:
    verdicts = feed(SenderWindow(clf), ["how old are you", "asl?", "what grade are you in"])
    assert verdicts == [CLEAN, CLEAN, CLEAN]


def test_innocent_message_after_grooming_is_not_flagged(clf: Classifier) -> None:
    verdicts = feed(SenderWindow(clf), ["how old are you", "don't tell your parents", "ok bye"])
    assert verdicts[1].category == "grooming"
    assert verdicts[2] == CLEAN


def test_sexual_image_request_to_teen_is_zero_tolerance(clf: Classifier) -> None:
    (v,) = feed(SenderWindow(clf), ["send me a pic in your underwear"])
    assert (v.category, v.severity) == ("csam_solicitation", Severity.ZERO)


def test_sexual_image_request_between_adults_is_a_grooming_signal(clf: Classifier) -> None:
    (v,) = feed(SenderWindow(clf), ["send me a pic in your underwear"], teen=False)
    assert (v.category, v.severity) == ("grooming", Severity.MEDIUM)


def test_teen_flag_can_differ_from_personal_info_protection(clf: Classifier) -> None:
    """An operator may protect adults' personal information; that does not make them teens."""
    w = SenderWindow(clf)
    v = w.check("send nudes", 0.0, protect_personal_info=True, moderated=True, teen=False)
    assert (v.category, v.severity) == ("grooming", Severity.HIGH)


def test_signals_age_out(clf: Classifier) -> None:
    w = SenderWindow(clf, max_age=120.0)
    assert feed(w, ["how old are you"]) == [CLEAN]
    assert w.conversation_score(1.0) == 1
    assert w.conversation_score(1.0 + w.policy.max_age + 1) == 0


def test_long_messages_are_not_kept_for_joins(clf: Classifier) -> None:
    w = SenderWindow(clf)
    feed(w, ["my number is 415 " + "x" * 5000, "892", "3371"])
    assert all(e.text is None or len(e.text) < 200 for e in w._entries)


def test_window_keeps_max_messages(clf: Classifier) -> None:
    w = SenderWindow(clf, max_messages=3)
    feed(w, ["how old are you", "a", "b", "c"])
    assert w.score() == 0


def test_the_window_keeps_its_newest_messages_and_expires_only_the_old(clf: Classifier) -> None:
    """At most ``max_messages`` entries, the oldest dropped first; expiry drops exactly those
    older than ``max_age``."""
    w = SenderWindow(clf, max_messages=3, max_age=60.0)
    feed(w, ["a", "b", "c", "d"], step=10.0)  # at 0, 10, 20, 30
    assert [e.text for e in w._entries] == ["b", "c", "d"]
    w._expire(85.0)  # "b" (10) and "c" (20) are past 60 s, "d" (30) is not
    assert [e.text for e in w._entries] == ["d"]
    w._expire(200.0)
    assert w._entries == []
