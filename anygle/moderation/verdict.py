"""Severity levels, categories and the Verdict value the classifier returns.

Severity is ordered so callers can compare and take max(); categories are stable
snake_case ids used in logs and metrics, so never rename one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Severity(IntEnum):
    CLEAN = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    ZERO = 4

    @property
    def wire(self) -> str | None:
        """Value for moderation_warning.severity; zero tolerance is 'high' on the wire."""
        return _WIRE[self]


_WIRE = {
    Severity.CLEAN: None,
    Severity.LOW: "low",
    Severity.MEDIUM: "medium",
    Severity.HIGH: "high",
    Severity.ZERO: "high",
}


# What a verdict rests on, which decides what it may lead to (policy.py): ``rule`` (a rule
# matched: explainable, counts towards a ban), ``model`` (the learned layer alone: blocks, never
# counts towards a ban), ``signal`` (one grooming move in a conversation: blocks, not a strike),
# ``conversation`` (two or more grooming moves of one sender in one chat: a strike).
RULE, MODEL, SIGNAL, CONVERSATION = "rule", "model", "signal", "conversation"


@dataclass(frozen=True, slots=True)
class Verdict:
    severity: Severity
    category: str | None
    evidence: str | None
    basis: str = RULE
    # Set on a delivered message whose sender's conversation has reached the grey zone: the
    # recipient (a teen) gets a ``safety_notice`` of this kind after the message.
    notice: str | None = None

    def __bool__(self) -> bool:
        return self.severity is not Severity.CLEAN


CLEAN = Verdict(Severity.CLEAN, None, None)

# Fixed severity of each category. 'grooming' is decided by SenderWindow (HIGH when a teen
# is involved, else MEDIUM); 'personal_info' and 'link' only fire when personal info is protected.
CATEGORY_SEVERITY: dict[str, Severity] = {
    "csam_solicitation": Severity.ZERO,
    "minor_sexual": Severity.ZERO,
    "violent_threat": Severity.HIGH,
    "doxing": Severity.HIGH,
    "personal_info": Severity.HIGH,
    "link": Severity.HIGH,
    "grooming": Severity.HIGH,
    "slur": Severity.MEDIUM,
    "harassment": Severity.MEDIUM,
    "sexual_explicit": Severity.MEDIUM,
    "insult": Severity.LOW,
    "profanity": Severity.LOW,
}

# Order inside one severity tier: when one message matches two categories of the same
# severity, the earlier (more specific) one names the verdict.
CATEGORY_ORDER: tuple[str, ...] = tuple(CATEGORY_SEVERITY)

# The only categories that apply in the unmoderated queue.
UNMODERATED_CATEGORIES = frozenset({"csam_solicitation", "minor_sexual", "doxing"})
# Categories that only apply when personal information is protected (teens, or configured adults).
PROTECTED_CATEGORIES = frozenset({"personal_info", "link"})
