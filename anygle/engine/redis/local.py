"""This instance's users and rooms as the engine knows them, and what events do to them.

Redis holds the shared truth; :class:`Local` holds what the instance needs without asking it: who
is connected here, which room each is in, and on which instance each partner is (a relay to a
partner here is a direct call).  Inbox events and script replies are applied here, and the
sink hears of every change for a local user.  Events may overtake the ``matched`` of their room
(the inbox and the join's reply travel separately): they are held back until it comes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from twisted.logger import Logger

from anygle.engine.base import EngineSink
from anygle.model import Match, Preferences

__all__ = ["GAP_WAIT", "Local", "LocalRoom", "LocalUser", "unpacked_match"]

GAP_WAIT = 2.0  # s a relay that came too early waits for those before it (after a move)


def unpacked_match(m: list[Any], matched_at: float) -> Match:
    """A match as scripts and inbox events carry it: ``[room, mode, initiator, responder,
    interests, shared interests, (time), instances]`` (the time is given apart: its unit
    differs between the two that send it)."""
    room_id, mode, initiator, responder, interests, shared, _, _ = m
    return Match(
        room_id=room_id,
        mode=mode,
        initiator=initiator,
        responder=responder,
        interests={k: tuple(v) for k, v in interests.items()},
        shared_interests=tuple(shared),
        matched_at=matched_at,
    )


@dataclass(slots=True)
class LocalUser:
    """A user connected to this instance."""

    ip: str
    socket_id: str
    prefs: Preferences | None = None  # while waiting
    joined_at: float = 0.0
    room: str | None = None
    resume_key: str = ""  # token_key of the session's resume token (``resume:{key}``)
    sent: int = 0  # relays this user sent to its partner, on any instance (sequence number)
    seen: int = 0  # highest sequence number delivered to this user (duplicates dropped)
    # A user that just moved here (a resume from another instance) gets relays both forwarded
    # by its old instance and straight from its partner's: until ``reorder_until`` one that
    # comes before its predecessors waits (at most ``GAP_WAIT`` s) in ``gap``, by number.
    reorder_until: float = 0.0
    gap: list[tuple[int, str, dict[str, Any]]] | None = None


@dataclass(slots=True)
class LocalRoom:
    """A room with at least one local user."""

    match: Match
    instances: dict[str, str]
    active: bool = False

    @property
    def local_only(self) -> bool:
        return len(set(self.instances.values())) == 1


class Local:
    """Users and rooms of ``instance``, and counts of what happened to their events."""

    log = Logger()

    def __init__(self, instance: str, reactor: Any) -> None:
        self.instance = instance
        self.reactor = reactor
        self.counters = {
            "held": 0,  # inbox events that came before their room's matched (held back)
            "duplicates_dropped": 0,
            "undelivered": 0,
        }
        self.sink: EngineSink | None = None  # set when the engine starts
        self.users: dict[str, LocalUser] = {}
        self.rooms: dict[str, LocalRoom] = {}
        self.ended: dict[str, float] = {}  # room id -> when (recently ended here)
        self.early: dict[str, list[tuple[float, tuple[Any, ...]]]] = {}
        # resumes under way (anygle/engine/redis/handover.py): relays for a user claimed here
        # that came before its session did, and users gone elsewhere (-> (instance, until))
        self.claims: dict[str, list[tuple[Any, ...]]] = {}
        self.forward: dict[str, tuple[str, float]] = {}
        self.forwarder: Callable[[str, tuple[Any, ...]], None] | None = None

    def started_sink(self) -> EngineSink:
        assert self.sink is not None, "engine not started"
        return self.sink

    # --- events (the inbox, script replies) -----------------------------------------------
    def dispatch(self, event: list[Any]) -> None:
        """One inbox event: ``r`` relay, ``m`` matched, ``l`` partner left, ``k`` kick."""
        kind = event[0]
        if kind == "r":
            self.deliver(event[1], event[2], event[3], event[4] if len(event) > 4 else 0)
        elif kind == "m":
            self.apply_match(event[1], None)
        elif kind == "l":
            self.partner_left(event[1], event[2], event[3])
        elif kind == "k":
            if event[1] in self.users:
                self.started_sink().on_kick(event[1], event[2], event[3])

    def _hold(self, room_id: str, event: tuple[Any, ...]) -> None:
        """An event for a room whose ``matched`` has not reached us yet."""
        self.early.setdefault(room_id, []).append((self.reactor.seconds(), event))
        self.counters["held"] += 1

    def deliver(self, user_id: str, room_id: str, frame: dict[str, Any], seq: int = 0) -> None:
        local = self.users.get(user_id)
        if local is None:
            self._not_here(("r", user_id, room_id, frame, seq))
            return
        if local.room == room_id:
            if seq:
                if seq <= local.seen:  # sent again after a reconnect: already delivered
                    self.counters["duplicates_dropped"] += 1
                    return
                if seq > local.seen + 1 and self.reactor.seconds() < local.reorder_until:
                    self._wait_for_gap(user_id, local, (seq, room_id, frame))
                    return
                local.seen = seq
            self.started_sink().on_relay(user_id, room_id, frame)
            if local.gap:
                self._fill_gap(user_id, local)
        elif room_id not in self.rooms and room_id not in self.ended:
            self._hold(room_id, ("r", user_id, room_id, frame, seq))

    def _not_here(self, event: tuple[Any, ...]) -> None:
        """A relay for a user who is not here: being claimed (kept for it), or gone elsewhere
        by a resume (forwarded there, with its number)."""
        user_id = event[1]
        held = self.claims.get(user_id)
        if held is not None:
            held.append(event)
            return
        gone = self.forward.get(user_id)
        if gone is not None and self.forwarder is not None:
            self.forwarder(gone[0], event)

    def _wait_for_gap(
        self, user_id: str, local: LocalUser, relay: tuple[int, str, dict[str, Any]]
    ) -> None:
        if local.gap is None:
            local.gap = []
            self.reactor.callLater(GAP_WAIT, self._give_up_gap, user_id, local)
        local.gap.append(relay)
        local.gap.sort(key=lambda r: r[0])

    def _fill_gap(self, user_id: str, local: LocalUser) -> None:
        gap = local.gap
        while gap and gap[0][0] <= local.seen + 1:
            seq, room_id, frame = gap.pop(0)
            self.deliver(user_id, room_id, frame, seq)

    def _give_up_gap(self, user_id: str, local: LocalUser) -> None:
        """What waited for a relay that never came goes out in order."""
        gap, local.gap = local.gap or [], None
        if self.users.get(user_id) is not local:
            return
        for seq, room_id, frame in gap:
            if seq > local.seen and local.room == room_id:
                local.seen = seq
                self.started_sink().on_relay(user_id, room_id, frame)

    def partner_left(self, user_id: str, room_id: str, reason: str) -> None:
        local = self.users.get(user_id)
        if local is None:
            return
        if local.room == room_id:
            local.room = None
            self.forget_room(room_id)
            self.started_sink().on_partner_left(user_id, room_id, reason)
        elif room_id not in self.rooms and room_id not in self.ended:
            self._hold(room_id, ("l", user_id, room_id, reason))

    def apply_match(self, m: list[Any], matched_at: float | None) -> Match:
        """A match from a script (``join``, ``tick``) or the inbox; its local users are told,
        then the events that came before it."""
        room_id, _, initiator, responder, *_, at_ms, instances = m
        match = unpacked_match(m, matched_at if matched_at is not None else at_ms / 1000.0)
        local = [
            u
            for u in (initiator, responder)
            if instances.get(u) == self.instance and u in self.users
        ]
        if not local:
            return match
        self.rooms[room_id] = LocalRoom(match, dict(instances))
        for u in local:
            lu = self.users[u]
            if lu.room is not None and lu.room != room_id:
                self.log.error("{u} matched into {r} while in {o}", u=u, r=room_id, o=lu.room)
            lu.room, lu.prefs = room_id, None
            lu.sent = lu.seen = 0  # numbered per room
        sink = self.started_sink()
        for u in local:
            sink.on_matched(u, match)
        for _, event in self.early.pop(room_id, ()):
            self.dispatch(list(event))
        return match

    def left(self, reply: bytes, reason: str) -> str | None:
        """After leave_room/disconnect: tell a local partner; returns the partner id."""
        result = msgpack.unpackb(reply, raw=False)
        if not result:
            return None
        partner: str
        partner, partner_instance, room_id = result
        if partner_instance == self.instance:
            self.partner_left(partner, room_id, reason)
        self.forget_room(room_id)
        return partner

    def undelivered(self, partner_id: str, room_id: str, frame: dict[str, Any]) -> None:
        """A relay that cannot be delivered: its sender is told (``NOT_DELIVERED``)."""
        self.counters["undelivered"] += 1
        room = self.rooms.get(room_id)
        tell = getattr(self.sink, "on_undelivered", None)
        if room is not None and tell is not None:
            sender = room.match.partner_of(partner_id)
            if sender in self.users:
                tell(sender, room_id, frame)

    # --- rooms ending ---------------------------------------------------------------------
    def forget_room(self, room_id: str) -> None:
        self.rooms.pop(room_id, None)
        self.ended[room_id] = self.reactor.seconds()

    def take_room(self, local: LocalUser | None) -> tuple[str, LocalRoom | None] | None:
        """Detach a local user from its room (before asking Redis to end it)."""
        if local is None or local.room is None:
            return None
        room_id, local.room = local.room, None
        room = self.rooms.pop(room_id, None)
        self.ended[room_id] = self.reactor.seconds()
        return room_id, room

    def end_room(self, room_id: str) -> bool:
        """End a room here only: its local users are told ``partner_disconnected``.  ``False``
        when no such room was known here."""
        room = self.rooms.get(room_id)
        self.forget_room(room_id)
        if room is None:
            return False
        for user_id in (room.match.initiator, room.match.responder):
            local = self.users.get(user_id)
            if local is not None and local.room == room_id:
                local.room = None
                self.started_sink().on_partner_left(user_id, room_id, "disconnected")
        return True

    def touch_payloads(self, now_ms: int) -> list[bytes]:
        """``touch.lua``'s arguments (TTLs refreshed): every local user, and the rooms active
        since the last call; a thousand of each per call."""
        rooms = [r for r, room in self.rooms.items() if room.active]
        for r in rooms:
            self.rooms[r].active = False
        users = [(u, local.socket_id, local.resume_key) for u, local in self.users.items()]
        return [
            msgpack.packb((users[i : i + 1000], rooms[i : i + 1000], now_ms))
            for i in range(0, max(len(users), len(rooms), 1), 1000)
        ]

    def clear(self) -> None:
        """The engine stops: a local user whose partner is local too is told the chat ended
        (Redis told remote partners), and everybody is forgotten."""
        told: set[str] = set()
        for user_id, local in list(self.users.items()):
            room = self.rooms.get(local.room) if local.room else None
            if room is None or user_id in told:
                continue
            partner = room.match.partner_of(user_id)
            told.update((user_id, partner))
            if room.instances.get(partner) == self.instance and partner in self.users:
                self.users[partner].room = None
                local.room = None
                self.started_sink().on_partner_left(partner, room.match.room_id, "disconnected")
        self.users.clear()
        self.rooms.clear()

    def purge(self, now: float) -> None:
        """Forget rooms ended a minute ago, and events held back 30 s for a ``matched`` that
        never came."""
        limit = now - 60.0
        ended = self.ended
        while ended:  # insertion order is time order
            room_id = next(iter(ended))
            if ended[room_id] > limit:
                break
            del ended[room_id]
        for user_id in [u for u, (_, until) in self.forward.items() if until < now]:
            del self.forward[user_id]
        if self.early:
            limit = now - 30.0
            for room_id in [r for r, evs in self.early.items() if evs[0][0] < limit]:
                del self.early[room_id]
