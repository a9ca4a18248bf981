"""The domain vocabulary: what a user asks for, a match, the service's figures.

Plain data shared by validation, sessions, the hub, the matching rules and both engines; it
depends on nothing else in Anygle, so talking about users never means importing storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AGE_CATEGORIES = ("teen", "adult")
MODES = ("text", "video", "voice")
QUEUE_TYPES = ("moderated", "unmoderated")


@dataclass(frozen=True, slots=True)
class Preferences:
    """What a user asked for in ``join``: fixes their queue and how picky they are."""

    age_category: str
    mode: str
    queue_type: str
    interests: tuple[str, ...] = ()
    interests_only: bool = False

    @property
    def queue(self) -> str:
        """The queue name, ``{cat}:{mode}:{type}`` as in the seed's ``queue:`` key."""
        return f"{self.age_category}:{self.mode}:{self.queue_type}"

    def packed(self) -> list[object]:
        """As plain data (msgpack), for a session handed to another instance."""
        return [
            self.age_category,
            self.mode,
            self.queue_type,
            list(self.interests),
            self.interests_only,
        ]

    @classmethod
    def unpacked(cls, data: list[Any] | None) -> Preferences | None:
        """The inverse of :meth:`packed` (None stays None)."""
        if not data:
            return None
        return cls(data[0], data[1], data[2], tuple(data[3]), data[4])


@dataclass(frozen=True, slots=True)
class Match:
    """A room just created by the engine for two waiting users."""

    room_id: str
    mode: str
    initiator: str
    responder: str
    interests: dict[str, tuple[str, ...]]  # user id -> that user's interests
    shared_interests: tuple[str, ...]
    matched_at: float

    def partner_of(self, user_id: str) -> str:
        return self.responder if user_id == self.initiator else self.initiator


@dataclass(slots=True)
class Stats:
    """Service-wide figures, as pushed in ``stats`` and served on ``/stats``."""

    total_online: int = 0
    in_queue: int = 0
    active_chats: int = 0
    avg_match_time: float = 0.0  # ms, recent join -> matched
    total_matches: int = 0
    queues: dict[str, int] = field(default_factory=dict)  # queue name -> waiting users
    # moderation actions: "{tier}:{category}:{outcome}" -> count (outcome: deliver|block|ban)
    moderation: dict[str, int] = field(default_factory=dict)
    reports: dict[str, int] = field(default_factory=dict)  # reports received, by reason
    report_blocks: int = 0  # users banned by reports
