"""Who may be matched with whom, and whom to prefer — the rules every engine implements.

The memory engine calls these functions; the redis engine's Lua scripts implement the same rules
(``anygle/engine/redis/lua/``), and one behavioural suite checks both.

* Users only meet inside one queue: same ``ageCategory``, ``mode`` and ``queueType``.
* Never oneself, never a pair that skipped each other within ``rematch-cooldown``.
* A user is *open* (takes anyone) when they gave no interests, or when they have waited
  ``interest-timeout`` and did not ask for ``interestsOnly``.  ``interestsOnly`` without interests
  means nothing: such a user is open.
* Two users are compatible when they share an interest, or when both are open.
* A seeker prefers the compatible waiting user with the most shared interests; among equals, the
  one who has waited longest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from anygle.model import Preferences


@dataclass(slots=True, eq=False)
class QueueEntry:
    """A waiting user."""

    user_id: str
    prefs: Preferences
    joined_at: float  # seconds, engine clock
    seq: int = 0  # tie-break: order of arrival
    interests: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.interests = frozenset(self.prefs.interests)


def is_open(entry: QueueEntry, now: float, interest_timeout: float) -> bool:
    """Whether ``entry`` takes a partner without shared interests."""
    if not entry.interests:
        return True
    if entry.prefs.interests_only:
        return False
    return now - entry.joined_at >= interest_timeout


def shared_interests(a: QueueEntry, b: QueueEntry) -> tuple[str, ...]:
    """The intersection, in ``a``'s order (the order ``a`` gave them in)."""
    return tuple(i for i in a.prefs.interests if i in b.interests)


def compatible(a: QueueEntry, b: QueueEntry, now: float, interest_timeout: float) -> bool:
    """Compatibility without the cooldown check (the engine owns cooldown state)."""
    if a.user_id == b.user_id or a.prefs.queue != b.prefs.queue:
        return False
    if a.interests & b.interests:
        return True
    return is_open(a, now, interest_timeout) and is_open(b, now, interest_timeout)


def preference_key(seeker: QueueEntry, candidate: QueueEntry) -> tuple[int, float, int]:
    """Sort key: smaller is better (most shared interests, then oldest, then first arrived)."""
    return (-len(seeker.interests & candidate.interests), candidate.joined_at, candidate.seq)


def pair_key(a: str, b: str) -> tuple[str, str]:
    """An order-free key for a pair of users (cooldowns)."""
    return (a, b) if a < b else (b, a)
