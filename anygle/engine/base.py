"""The seam between Anygle's logic and its storage.

Everything that is shared between users — who is online, the queues, the rooms, counters and bans —
goes through an :class:`Engine`.  ``memory`` keeps it in this process; ``redis`` shares it between
many instances.  Every method that touches shared state returns a Deferred, even on the memory
engine, so that the hub is written once for both.

Events travel the other way: the engine calls the :class:`EngineSink` (the hub of the instance that
holds the user's socket) for every event addressed to a local user — wherever in the cluster it
was caused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

AGE_CATEGORIES = ("teen", "adult")
MODES = ("text", "video", "voice")
QUEUE_TYPES = ("moderated", "unmoderated")


# The names looked up under ``banned:ips:`` for one client: one name, several, or none.
IpNames = str | Sequence[str] | None


def ip_names(ips: IpNames) -> tuple[str, ...]:
    """``ips`` as a tuple (one name given as a string is one name, not its characters)."""
    if ips is None:
        return ()
    return (ips,) if isinstance(ips, str) else tuple(ips)


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

    def to_dict(self) -> dict:
        return {
            "ageCategory": self.age_category,
            "mode": self.mode,
            "queueType": self.queue_type,
            "interests": list(self.interests),
            "interestsOnly": self.interests_only,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Preferences:
        return cls(
            d["ageCategory"],
            d["mode"],
            d["queueType"],
            tuple(d.get("interests") or ()),
            bool(d.get("interestsOnly", False)),
        )


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

    def to_dict(self) -> dict:
        return {
            "roomId": self.room_id,
            "mode": self.mode,
            "initiator": self.initiator,
            "responder": self.responder,
            "interests": {k: list(v) for k, v in self.interests.items()},
            "sharedInterests": list(self.shared_interests),
            "matchedAt": self.matched_at,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Match:
        return cls(
            d["roomId"],
            d["mode"],
            d["initiator"],
            d["responder"],
            {k: tuple(v) for k, v in d["interests"].items()},
            tuple(d["sharedInterests"]),
            float(d["matchedAt"]),
        )


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


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Settings every engine understands (from ``etc/anygle.conf`` / options)."""

    instance_id: str
    interest_timeout: float = 5.0  # s a user with interests waits for a shared-interest partner
    rematch_cooldown: float = 60.0  # s two users who skipped each other are kept apart
    redis_url: str = "redis://127.0.0.1:6379/0"
    match_history: int = 100  # recent match times kept per queue for averages


class EngineSink(Protocol):
    """What an engine calls to hand an event to a user connected to *this* instance."""

    def on_matched(self, user_id: str, match: Match) -> None: ...

    def on_partner_left(self, user_id: str, room_id: str, reason: str) -> None:
        """``reason`` is ``'skipped'`` or ``'disconnected'``."""

    def on_relay(self, user_id: str, room_id: str, frame: dict) -> None:
        """A server frame (``message``, ``partner_typing``, ``offer`` …) from the partner."""

    def on_kick(self, user_id: str, code: str, reason: str) -> None:
        """Close this user's connection (ban, admin kick): ``code`` is the error code to send."""

    def on_undelivered(self, user_id: str, room_id: str, frame: dict) -> None:
        """A frame ``user_id`` relayed could not be delivered to the partner (optional: the
        redis engine calls it when its outage buffer is full)."""


class Engine(Protocol):
    """Storage and cross-user coordination.  Implementations: ``anygle.engine.memory``,
    ``anygle.engine.redis``; see :func:`anygle.engine.create_engine`."""

    name: ClassVar[str]

    def start(self, sink: EngineSink) -> Deferred[None]: ...

    def stop(self) -> Deferred[None]:
        """Clean stop: every local user leaves queues and rooms (partners are told)."""

    def health(self) -> tuple[bool, str]:
        """``(ok, reason)`` — the truth for ``/health``."""

    # --- sessions -------------------------------------------------------------------------
    def connect(self, user_id: str, ip: str) -> Deferred[None]:
        """A user is online on this instance."""

    def disconnect(self, user_id: str) -> Deferred[None]:
        """The user's socket is gone: queue entry removed, room ended (partner gets
        ``on_partner_left(.., 'disconnected')``), online count decremented."""

    # --- queues and rooms -------------------------------------------------------------------
    def join(self, user_id: str, prefs: Preferences, now: float) -> Deferred[Match | None]:
        """Queue the user (replacing an earlier entry) and try to match at once.  The user must
        not be in a room.  On a match ``on_matched`` reaches both users before this fires."""

    def leave_queue(self, user_id: str) -> Deferred[bool]:
        """Remove the user's queue entry; ``True`` if there was one."""

    def leave_room(self, user_id: str, reason: str) -> Deferred[str | None]:
        """End the user's room.  The partner gets ``on_partner_left(partner, room, reason)``;
        ``reason='skipped'`` also starts the pair's rematch cooldown.  Returns the partner id,
        or ``None`` when the user was in no room (e.g. the partner ended it first)."""

    def relay(self, partner_id: str, room_id: str, frame: dict) -> None:
        """Deliver ``frame`` to ``partner_id`` (``on_relay``), in order, exactly once."""

    def tick(self, now: float) -> Deferred[int]:
        """Periodic matching: interest fallback, cooldown expiry, retries.  Returns matches made."""

    def queue_status(self, user_ids: list[str]) -> Deferred[dict[str, tuple[int, float]]]:
        """``{user: (position, estimatedTime ms)}`` for those of ``user_ids`` that are waiting.
        Batched, because the hub refreshes every waiting user's ``searching`` at once."""

    def stats(self) -> Deferred[Stats]: ...

    # --- shared counters and bans ---------------------------------------------------------
    def incr(self, key: str, ttl: float) -> Deferred[int]:
        """Increment a counter that expires ``ttl`` s after its last increment."""

    def get_count(self, key: str) -> Deferred[int]: ...

    def get_ban(self, user_id: str | None, ips: IpNames = None) -> Deferred[str | None]:
        """The ban reason for this user or one of ``ips`` (``banned:ips:{name}``; a client's
        names are ``anygle.clientip.ban_keys``: its address, its /64 …), ``None`` when none is
        banned."""

    def ban(self, kind: str, value: str, reason: str, ttl: float | None) -> Deferred[None]:
        """``kind`` is ``'users'`` or ``'ips'``; ``ttl=None`` bans for good."""

    def unban(self, kind: str, value: str) -> Deferred[bool]: ...

    def check_bans(self, users: dict[str, IpNames]) -> Deferred[dict[str, str]]:
        """``{user: reason}`` for those of ``{user: ban names}`` banned by user id or by IP —
        polled every second so that a ban set with ``redis-cli`` kicks connected users too."""

    # --- abuse limits (shared by all instances) -------------------------------------------
    def rate(self, key: str, limit: int, window: float) -> Deferred[bool]:
        """GCRA: ``True`` while ``key`` is used at most ``limit`` times per ``window`` s
        (bursts up to ``limit``); each call counts."""

    def acquire_connection(self, key: str, limit: int) -> Deferred[bool]:
        """Count one more open connection from abuse key ``key`` unless ``limit`` are open."""

    def release_connection(self, key: str) -> Deferred[None]: ...

    def record_moderation(self, tier: str, category: str, outcome: str) -> None:
        """Count one moderation action (fire and forget) for ``Stats.moderation``."""


class EngineUnavailable(Exception):
    """Shared state cannot be reached right now (Redis down): the hub answers
    ``SERVICE_UNAVAILABLE`` and keeps local chats going."""
