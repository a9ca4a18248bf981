"""A session that moves to another instance: a user resumes (anygle/resume.py) on an instance
other than the one that held its session (nginx sends a reconnect anywhere).

1. The new instance runs ``claim.lua``: the user's record, its queue entry and its room now name
   the new instance, so every new event for it goes there.  The script tells the old instance
   (``h``) and, when the partner is on a third one, that one (``v``: relay to the new instance).
2. The old instance, on ``h``, hands the session over: the hub's state of it (what was kept while
   the user was away, its transcript …) and the engine's (room, sequence numbers) travel in one
   ``H`` event through the new instance's inbox.  Relays that still reach the old instance
   afterwards are forwarded there with their numbers (``Local.forward``).
3. The new instance, on ``H``, installs the user and its room and gives the hub the state; relays
   that came before it were kept (``Local.claims``); for a while after the move a relay that
   overtook an earlier one (straight from the partner vs forwarded) waits for it (``GAP_WAIT``).

Nothing is lost or repeated in the move: every relay is numbered per sender and room, the old
instance forwards what it gets after handing over, and the receiver orders by number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet import defer
from twisted.logger import Logger

from anygle.engine.redis.delivery import Outbox
from anygle.engine.redis.local import Local, LocalRoom, LocalUser, unpacked_match
from anygle.engine.redis.scripts import Commands, ms
from anygle.model import Preferences

__all__ = ["Handover"]

CLAIM_TIMEOUT = 5.0  # s the new instance waits for the old one's ``H``
FORWARD_FOR = 60.0  # s the old instance forwards relays that still come for a moved user
REORDER_FOR = 10.0  # s after a move during which relays are put back in order


class Handover:
    """Both ends of a move: :meth:`claim` on the new instance, the ``h``/``H``/``v`` events."""

    log = Logger()

    def __init__(
        self,
        instance: str,
        commands: Commands,
        local: Local,
        outbox: Outbox,
        clock: Any,
        reactor: Any,
        disconnect: Callable[[str], defer.Deferred[None]],
    ) -> None:
        self.instance = instance
        self.commands = commands
        self.local = local
        self.outbox = outbox
        self.clock = clock
        self.reactor = reactor
        self.disconnect = disconnect  # removes a user whose record names us but who never came
        self.waiting: dict[str, defer.Deferred[dict[str, Any] | None]] = {}
        self.counters = {"resumes_claimed": 0, "sessions_handed_over": 0}
        local.forwarder = lambda instance, event: outbox.add(instance, event)

    # --- the new instance -----------------------------------------------------------------
    def claim(self, key: str, new_key: str) -> defer.Deferred[dict[str, Any] | None]:
        """Move the session whose resume key is ``key`` here (``new_key`` from now on); fires
        with the hub's state of it once the old instance handed it over, or None."""
        now = ms(self.clock.seconds())
        d = self.commands.script("claim", key, new_key, self.instance, now)
        return d.addCallback(self._claimed)

    def _claimed(self, reply: bytes) -> defer.Deferred[dict[str, Any] | None] | None:
        result = msgpack.unpackb(reply, raw=False)
        if not result:
            return None
        user_id = result[0]
        self.local.claims[user_id] = []
        waiter: defer.Deferred[dict[str, Any] | None] = defer.Deferred()
        self.waiting[user_id] = waiter
        self.reactor.callLater(CLAIM_TIMEOUT, self._expired, user_id, waiter)
        return waiter

    def _expired(self, user_id: str, waiter: defer.Deferred[Any]) -> None:
        if self.waiting.get(user_id) is waiter:
            self.log.warn("{user}: no handover from its old instance", user=user_id)
            self._failed(user_id)

    def _failed(self, user_id: str) -> None:
        """The session did not come: the record that names us goes (its partner is told)."""
        waiter = self.waiting.pop(user_id)
        self.local.claims.pop(user_id, None)
        waiter.callback(None)
        self.disconnect(user_id).addErrback(
            lambda f: self.log.failure("removing {user}", f, user=user_id)
        )

    def _handed(self, user_id: str, package: dict[str, Any] | None) -> None:
        if user_id not in self.waiting:
            return  # given up already
        if package is None:  # it ended there before the claim reached it
            self._failed(user_id)
            return
        waiter = self.waiting.pop(user_id)
        held = self.local.claims.pop(user_id, [])
        ip, socket_id, resume_key, sent, seen, prefs, joined_at = package["user"]
        user = LocalUser(
            ip,
            socket_id,
            prefs=Preferences.unpacked(prefs),
            joined_at=joined_at,
            resume_key=resume_key,
            sent=sent,
            seen=seen,
            reorder_until=self.reactor.seconds() + REORDER_FOR,
        )
        room = package["room"]
        if room is not None:
            room_id, *_, at, instances = room
            instances[user_id] = self.instance
            known = self.local.rooms.get(room_id)
            if known is not None:  # the partner is here
                known.instances[user_id] = self.instance
            else:
                self.local.rooms[room_id] = LocalRoom(unpacked_match(room, at), instances)
            user.room = room_id
        self.local.users[user_id] = user
        self.counters["resumes_claimed"] += 1
        waiter.callback(package["hub"])  # the hub takes the session on from here
        for event in held:
            self.local.dispatch(list(event))

    # --- the old instance, and the partner's --------------------------------------------------
    def dispatch(self, event: list[Any]) -> bool:
        """Handle an inbox event of a move; False for any other event."""
        kind = event[0]
        if kind == "h":
            self._hand_over(event[1], event[2])
        elif kind == "H":
            self._handed(event[1], event[3])
        elif kind == "v":
            room = self.local.rooms.get(event[1])
            if room is not None:
                room.instances[event[2]] = event[3]
        else:
            return False
        return True

    def _hand_over(self, user_id: str, to: str) -> None:
        user = self.local.users.pop(user_id, None)
        self.local.forward[user_id] = (to, self.reactor.seconds() + FORWARD_FOR)
        state = self.local.started_sink().on_handover(user_id) if user is not None else None
        package = None
        if user is not None and state is not None:
            room = self._room_of(user_id, user, to)
            package = {
                "hub": state,
                "user": [
                    user.ip,
                    user.socket_id,
                    user.resume_key,
                    user.sent,
                    user.seen,
                    user.prefs.packed() if user.prefs else None,
                    user.joined_at,
                ],
                "room": room,
            }
            self.counters["sessions_handed_over"] += 1
        self.outbox.add(to, ("H", user_id, "", package, 0))

    def _room_of(self, user_id: str, user: LocalUser, to: str) -> list[Any] | None:
        """The user's room as the new instance needs it; here the room stays only for a partner
        who is here too (and relays to the new instance from now on)."""
        if user.room is None:
            return None
        room = self.local.rooms.get(user.room)
        if room is None:
            return None
        m = room.match
        partner = m.partner_of(user_id)
        if partner in self.local.users and room.instances.get(partner) == self.instance:
            room.instances[user_id] = to
        else:
            del self.local.rooms[user.room]
        instances = dict(room.instances)  # the new instance puts itself in for the user
        interests = {k: list(v) for k, v in m.interests.items()}
        return [
            m.room_id,
            m.mode,
            m.initiator,
            m.responder,
            interests,
            list(m.shared_interests),
            m.matched_at,
            instances,
        ]
