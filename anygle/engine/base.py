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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from anygle.model import Match, Preferences, Stats

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from anygle.reports import Report, ReportOutcome

# The names looked up under ``banned:ips:`` for one client: one name, several, or none.
IpNames = str | Sequence[str] | None


def ip_names(ips: IpNames) -> tuple[str, ...]:
    """``ips`` as a tuple (one name given as a string is one name, not its characters)."""
    if ips is None:
        return ()
    return (ips,) if isinstance(ips, str) else tuple(ips)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Settings every engine understands (from ``etc/anygle.conf`` / options)."""

    instance_id: str
    interest_timeout: float = 5.0  # s a user with interests waits for a shared-interest partner
    rematch_cooldown: float = 60.0  # s two users who skipped each other are kept apart
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_tls: tuple[str, str, str] = ("", "", "")  # rediss://: CA, client certificate, key
    redis_sentinels: str = ""  # host:port,...: they name the primary (redis_url: password, db)
    redis_master: str = "mymaster"
    match_history: int = 100  # recent match times kept per queue for averages
    report_retention: float = 30 * 86400.0  # s a report is kept
    report_ban_reporters: int = 3  # distinct reporter addresses that ban a user (0: never)
    report_ban_window: float = 3600.0  # s within which those reports must come
    report_ban_ttl: float | None = 86400.0  # s a report ban lasts (None: for good)


class EngineSink(Protocol):
    """What an engine calls to hand an event to a user connected to *this* instance."""

    def on_matched(self, user_id: str, match: Match) -> None: ...

    def on_partner_left(self, user_id: str, room_id: str, reason: str) -> None:
        """``reason`` is ``'skipped'``, ``'disconnected'`` or ``'moderation'`` (moderation ended
        the chat; the hub's ``MODERATION_ENDED``)."""

    def on_relay(self, user_id: str, room_id: str, frame: dict[str, Any]) -> None:
        """A server frame (``message``, ``partner_typing``, ``offer`` …) from the partner."""

    def on_kick(self, user_id: str, code: str, reason: str) -> None:
        """Close this user's connection (ban, admin kick): ``code`` is the error code to send."""

    def on_undelivered(self, user_id: str, room_id: str, frame: dict[str, Any]) -> None:
        """A frame ``user_id`` relayed could not be delivered to the partner (every sink has it;
        the redis engine calls it when its outage buffer is full, the memory engine never)."""

    def on_handover(self, user_id: str) -> dict[str, Any] | None:
        """The user resumed on another instance: return what it needs of the session (msgpack
        data; None when the session is gone) and forget it here without ending it (the redis
        engine only)."""


class Lifecycle(Protocol):
    """Starting, stopping and the health an engine reports."""

    name: ClassVar[str]

    def start(self, sink: EngineSink) -> Deferred[None]: ...

    def stop(self) -> Deferred[None]:
        """Clean stop: every local user leaves queues and rooms (partners are told)."""

    def health(self) -> tuple[bool, str]:
        """``(ok, reason)`` — the truth for ``/health``."""


class Rooms(Protocol):
    """Who is online, the queues, matching, the rooms and what is relayed in them."""

    # --- sessions -------------------------------------------------------------------------
    def connect(self, user_id: str, ip: str, resume_key: str = "") -> Deferred[None]:
        """A user is online on this instance; ``resume_key`` (anygle/resume.py ``token_key``)
        lets another instance find its session by the resume token."""

    def rekey(self, user_id: str, resume_key: str) -> Deferred[None]:
        """The session's resume token changed (a resume here)."""

    def claim(self, resume_key: str, new_key: str) -> Deferred[dict[str, Any] | None]:
        """Move the session of ``resume_key``, held by another instance, to this one (its key
        is ``new_key`` from now on): fires with what that instance's hub handed over
        (``EngineSink.on_handover``), or None (unknown key, or no other instance holds it)."""

    def disconnect(self, user_id: str) -> Deferred[None]:
        """The user's socket is gone: queue entry removed, room ended (partner gets
        ``on_partner_left(.., 'disconnected')``), online count decremented."""

    # --- queues and rooms -------------------------------------------------------------------
    def join(self, user_id: str, prefs: Preferences, now: float) -> Deferred[Match | None]:
        """Queue the user (replacing an earlier entry) and try to match at once.  The user must
        not be in a room.  On a match ``on_matched`` reaches both users before this fires."""

    def leave_room(self, user_id: str, reason: str) -> Deferred[str | None]:
        """End the user's room.  The partner gets ``on_partner_left(partner, room, reason)``;
        ``reason='skipped'`` also starts the pair's rematch cooldown.  Returns the partner id,
        or ``None`` when the user was in no room (e.g. the partner ended it first)."""

    def relay(self, partner_id: str, room_id: str, frame: dict[str, Any]) -> None:
        """Deliver ``frame`` to ``partner_id`` (``on_relay``), in order, exactly once."""

    def tick(self, now: float) -> Deferred[int]:
        """Periodic matching: interest fallback, cooldown expiry, retries.  Returns matches made."""

    def queue_status(self, user_ids: list[str]) -> Deferred[dict[str, tuple[int, float]]]:
        """``{user: (position, estimatedTime ms)}`` for those of ``user_ids`` that are waiting.
        Batched, because the hub refreshes every waiting user's ``searching`` at once."""

    def stats(self) -> Deferred[Stats]: ...


class Counters(Protocol):
    """Shared counters that expire (moderation strikes, ``keyseen``) and the moderation tally."""

    def incr(self, key: str, ttl: float) -> Deferred[int]:
        """Increment a counter that expires ``ttl`` s after its last increment."""

    def get_count(self, key: str) -> Deferred[int]: ...

    def record_moderation(self, tier: str, category: str, outcome: str) -> None:
        """Count one moderation action (fire and forget) for ``Stats.moderation``."""


class Bans(Protocol):
    """``banned:users:{id}`` and ``banned:ips:{name}``."""

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


class Limits(Protocol):
    """Abuse limits shared by all instances: handshake and request rates, connection caps."""

    def rate(self, key: str, limit: int, window: float) -> Deferred[bool]:
        """GCRA: ``True`` while ``key`` is used at most ``limit`` times per ``window`` s
        (bursts up to ``limit``); each call counts."""

    def acquire_connection(self, key: str, limit: int) -> Deferred[bool]:
        """Count one more open connection from abuse key ``key`` unless ``limit`` are open."""

    def release_connection(self, key: str) -> Deferred[None]: ...


class ReportStore(Protocol):
    """Reports of a partner (anygle/reports.py)."""

    def report(self, report: Report) -> Deferred[ReportOutcome]:
        """Store a report unless this reporter reported this room already (``duplicate``), count
        it, and ban the reported user when ``report_ban_reporters`` distinct reporter keys
        reported them within ``report_ban_window`` (and no ban stands yet); a banned user
        connected elsewhere is kicked (``on_kick``) by their instance."""

    def reports(self, limit: int) -> Deferred[list[dict[str, Any]]]:
        """The last ``limit`` stored reports (records), newest first."""

    def get_report(self, report_id: str) -> Deferred[dict[str, Any] | None]:
        """One stored report record, or ``None`` (unknown or past its retention)."""


class ModerationStore(Counters, Bans, Protocol):
    """What moderation's escalation needs (anygle/screening.py): strikes and bans."""


class AdmissionStore(Limits, Bans, Protocol):
    """What admitting a connection or a request needs (anygle/admission.py)."""


class Engine(Lifecycle, Rooms, Counters, Bans, Limits, ReportStore, Protocol):
    """Storage and cross-user coordination: all of the parts above, so that an implementation
    is checked against each.  Implementations: ``anygle.engine.memory``, ``anygle.engine.redis``;
    see :func:`anygle.engine.create_engine`.  A consumer that needs only a part names that part
    (``ModerationStore``, ``AdmissionStore``), so the seam it depends on stays narrow."""


class EngineUnavailable(Exception):
    """Shared state cannot be reached right now (Redis down): the hub answers
    ``SERVICE_UNAVAILABLE`` and keeps local chats going."""
