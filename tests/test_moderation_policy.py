"""EscalationPolicy: the seed's flow Warning 1 -> Warning 2 -> Warning 3 -> Block -> Ban."""

from __future__ import annotations

import pytest

from anygle.moderation import CLEAN, Action, EscalationPolicy, Severity, Verdict
from anygle.moderation.verdict import CONVERSATION, MODEL, SIGNAL

LOW = Verdict(Severity.LOW, "profanity", "fuck")
MEDIUM = Verdict(Severity.MEDIUM, "harassment", "kys")
HIGH = Verdict(Severity.HIGH, "violent_threat", "i will kill you")
ZERO = Verdict(Severity.ZERO, "csam_solicitation", "trading cp")
PI = Verdict(Severity.HIGH, "personal_info", "4158923371")


def run(policy: EscalationPolicy, verdicts: list[Verdict]) -> list[Action]:
    """Apply the policy the way the server does: count, then decide the next message."""
    warnings = blocks = 0
    actions = []
    for v in verdicts:
        a = policy.decide(v, warnings=warnings, blocks=blocks)
        warnings += a.count_warning
        blocks += a.count_block
        actions.append(a)
    return actions


def test_clean_is_delivered_silently() -> None:
    a = EscalationPolicy().decide(CLEAN, warnings=10, blocks=4)
    assert a == Action(True, None, None, False, False, False)


def test_low_is_delivered_with_low_warning_and_never_escalates() -> None:
    actions = run(EscalationPolicy(), [LOW] * 20)
    assert all(a.deliver and a.warning == "low" and not a.ban for a in actions)
    assert not any(a.count_warning or a.count_block for a in actions)


def test_medium_flow_warning_warning_block_then_ban() -> None:
    actions = run(EscalationPolicy(), [MEDIUM] * 7)
    assert [a.deliver for a in actions] == [True, True, False, False, False, False, False]
    assert all(a.warning == "medium" for a in actions)
    assert [a.ban for a in actions] == [False] * 6 + [True]  # 5th block bans
    assert all(a.count_warning for a in actions)
    assert [a.count_block for a in actions] == [False, False, True, True, True, True, True]


def test_high_is_blocked_with_high_warning() -> None:
    a = EscalationPolicy().decide(HIGH, warnings=0, blocks=0)
    assert (a.deliver, a.warning, a.ban, a.count_block, a.count_warning) == (
        False, "high", False, True, False
    )  # fmt: skip
    assert a.message


def test_warning_texts_name_the_reason() -> None:
    policy = EscalationPolicy()
    texts = {
        c: policy.decide(Verdict(Severity.HIGH, c, "x"), warnings=0, blocks=0).message
        for c in ("personal_info", "link", "grooming", "violent_threat")
    }
    assert len(set(texts.values())) == 4 and all(texts.values())


def test_repeated_high_blocks_ban() -> None:
    actions = run(EscalationPolicy(ban_after_blocks=3), [HIGH, PI, HIGH])
    assert [a.ban for a in actions] == [False, False, True]
    assert not any(a.deliver for a in actions)


def test_zero_tolerance_bans_at_once() -> None:
    a = EscalationPolicy().decide(ZERO, warnings=0, blocks=0)
    assert (a.deliver, a.warning, a.ban) == (False, "high", True)


def test_blocked_messages_are_never_delivered() -> None:
    policy = EscalationPolicy()
    for v in (HIGH, ZERO, PI):
        for w in range(5):
            for b in range(6):
                assert not policy.decide(v, warnings=w, blocks=b).deliver


def test_custom_thresholds() -> None:
    actions = run(EscalationPolicy(block_after_warnings=1), [MEDIUM])
    assert not actions[0].deliver
    assert EscalationPolicy().strike_ttl == 3600.0


@pytest.mark.parametrize("basis", [MODEL, SIGNAL])
def test_model_and_single_move_blocks_are_never_strikes(basis: str) -> None:
    """No run of blocks the model alone (or one grooming move) decided ever bans: they block,
    and are not counted."""
    v = Verdict(Severity.HIGH, "grooming", "learned p=0.91", basis)
    action = EscalationPolicy().decide(v, warnings=50, blocks=50)
    assert not action.deliver and action.warning == "high"
    assert not action.ban and not action.count_block and not action.count_warning


def test_a_conversation_decision_is_a_strike() -> None:
    v = Verdict(Severity.HIGH, "grooming", "score 4 (2 moves)", CONVERSATION)
    assert EscalationPolicy().decide(v, warnings=0, blocks=0).count_block
    assert EscalationPolicy().decide(v, warnings=0, blocks=4).ban
