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


@dataclass(frozen=True, slots=True)
class Verdict:
    severity: Severity
    category: str | None
    evidence: str | None

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
