"""Delivery between instances: each instance's inbox, and the relays it sends to the others.

* **Inbox.**  Each instance has one stream, ``inbox:{instance}``, read by a dedicated connection
  (``XREAD BLOCK`` from the last id seen: nothing is lost or repeated when that connection drops,
  unlike pub/sub).  Scripts append ``matched`` / ``partner left`` / ``kick`` events for users of
  *other* instances; :class:`Inbox` hands every event to the engine.
* **Outbox.**  Relays to a partner elsewhere are batched per reactor turn into one ``XADD`` per
  target inbox (:class:`Outbox`).  While Redis is unreachable they are kept (up to
  ``outage_buffer`` frames; beyond, the sender is told ``NOT_DELIVERED``) and sent when Redis is
  back; relays cut off in flight are sent again, and so are those Redis had acknowledged in the
  last ``replay_window`` when it comes back without its data; the receiver drops what it already
  has (a sequence number per room and direction), so nothing is lost or repeated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container
from typing import Any

import msgpack
from twisted.logger import Logger
from twisted.python.failure import Failure

from anygle.engine.base import EngineUnavailable
from anygle.engine.redis.scripts import CONNECTION_ERRORS, Commands, Status

__all__ = ["Event", "Inbox", "Outbox"]

# ("r", partner, room, frame, seq): a relay; the inbox also carries "m", "l" and "k" events
Event = tuple[Any, ...]


class Inbox:
    """Reads ``stream`` over its own connection and hands each event to ``dispatch`` (until the
    engine stops)."""

    log = Logger()

    def __init__(
        self,
        stream: str,
        reactor: Any,
        dispatch: Callable[[list[Any]], None],
        status: Status,
    ) -> None:
        self.stream = stream
        self.reactor = reactor
        self.dispatch = dispatch
        self.status = status
        self.proto: Any = None  # the inbox connection, while connected
        self.last_id = b"0-0"
        self.reading = False

    def connected(self, proto: Any) -> None:
        if self.status.stopping:
            return
        self.proto = proto
        if not self.reading:
            self.read()

    def lost(self, proto: Any) -> None:
        if self.proto is proto:
            self.proto = None

    def read(self) -> None:
        proto = self.proto
        if proto is None or self.status.stopping:
            self.reading = False
            return
        self.reading = True
        try:
            d = proto.execute_command(
                "XREAD", "COUNT", 1000, "BLOCK", 1000, "STREAMS", self.stream, self.last_id
            )
        except CONNECTION_ERRORS:
            self.reading = False
            return
        d.addCallbacks(self._got, self._read_failed)

    def _got(self, reply: Any) -> None:
        try:
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    try:
                        for event in msgpack.unpackb(fields[1], raw=False):
                            self.dispatch(event)
                    except Exception:
                        self.log.failure("bad inbox entry {id}", id=entry_id)
        finally:
            self.read()

    def _read_failed(self, failure: Failure) -> None:
        self.reading = False
        if not failure.check(*CONNECTION_ERRORS):
            self.log.failure("inbox read failed", failure)
            if self.proto is not None and self.proto.transport is not None:
                self.proto.transport.loseConnection()
        elif self.proto is not None and self.proto.connected:
            self.reactor.callLater(0.1, self.read)


class Outbox:
    """Relays to other instances: batched, kept through an outage, sent again when in doubt.

    ``undelivered(partner, room, frame)`` is called for a relay Redis refused.
    """

    log = Logger()

    batch_max = 500  # relays to one instance that are sent at once, without waiting for the turn
    outage_buffer = 20000  # relays to other instances kept while Redis is away
    replay_window = 10.0  # acknowledged relays sent again if Redis loses data

    def __init__(
        self,
        commands: Commands,
        reactor: Any,
        undelivered: Callable[[str, str, dict[str, Any]], None],
    ) -> None:
        self.commands = commands
        self.status = commands.status
        self.reactor = reactor
        self.undelivered = undelivered
        self.pending: dict[str, list[Event]] = {}  # instance -> relays not sent yet
        self.count = 0  # events in pending
        self.inflight: dict[int, tuple[str, list[Event]]] = {}  # XADDs unanswered
        self.xadds = 0
        self.sent: deque[tuple[float, str, list[Event]]] = deque()  # acknowledged
        self.sent_count = 0
        self.flush_call: Any = None

    def full(self) -> bool:
        """Redis is away and the buffer is full: the relay cannot be kept."""
        return not self.status.available and self.count >= self.outage_buffer

    def add(self, instance: str, event: Event) -> None:
        """Send ``event`` to ``instance``'s inbox with the others of this reactor turn."""
        batch = self.pending.setdefault(instance, [])
        batch.append(event)
        self.count += 1
        if not self.status.available:
            return  # kept: sent when Redis is back
        if len(batch) >= self.batch_max:
            self.flush()
        elif self.flush_call is None:
            self.flush_call = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """One ``XADD`` per target inbox for everything pending (when Redis is usable)."""
        if self.flush_call is not None:
            if self.flush_call.active():
                self.flush_call.cancel()
            self.flush_call = None
        if not self.pending or not self.status.available:
            return
        outbox, self.pending, self.count = self.pending, {}, 0
        for instance, events in outbox.items():
            self.xadds += 1
            key = self.xadds
            self.inflight[key] = (instance, events)
            d = self.commands.raw(
                "XADD",
                f"inbox:{instance}",
                "NOMKSTREAM",  # a reaped instance's inbox stays gone
                "MAXLEN",
                "~",
                100000,
                "*",
                "b",
                msgpack.packb(events),
            )
            d.addCallbacks(
                self._relayed, self._relay_failed, callbackArgs=(key,), errbackArgs=(key,)
            )

    def _relayed(self, _: Any, key: int) -> None:
        entry = self.inflight.pop(key, None)
        if entry is not None:
            # kept a while: a Redis that dies before the receiver read them loses them with its
            # data, and the restore sends them again (the receiver drops what it has)
            self.sent.append((self.reactor.seconds(), entry[0], entry[1]))
            self.sent_count += len(entry[1])
            while self.sent_count > self.outage_buffer:
                self.sent_count -= len(self.sent.popleft()[2])

    def _relay_failed(self, failure: Failure, key: int) -> None:
        if failure.check(EngineUnavailable, *CONNECTION_ERRORS):
            self.requeue_inflight()  # sent again after the reconnect (the receiver dedups)
            return
        entry = self.inflight.pop(key, None)
        if entry is None:
            return
        self.log.warn(
            "{n} relayed frames refused: {e}", n=len(entry[1]), e=failure.getErrorMessage()
        )
        for event in entry[1]:
            self.undelivered(event[1], event[2], event[3])

    def requeue_inflight(self) -> None:
        """Relays whose XADD got no answer go back in front of the outbox, in order: whether
        they reached Redis is unknown, so they are sent again and the receiver drops the ones it
        has (sequence numbers)."""
        if not self.inflight:
            return
        batches = list(self.inflight.values())
        self.inflight.clear()
        self._put_in_front(batches)

    def replay_sent(self, rooms: Container[str]) -> None:
        """Redis lost its data, and with it the relays its inboxes held that were not read yet:
        the recent acknowledged ones go in front of the outbox again, in order, for the rooms
        that go on (the receiver drops those it had already delivered)."""
        sent, self.sent, self.sent_count = self.sent, deque(), 0
        batches = [(instance, [e for e in events if e[2] in rooms]) for _, instance, events in sent]
        self._put_in_front(batches)

    def _put_in_front(self, batches: list[tuple[str, list[Event]]]) -> None:
        outbox: dict[str, list[Event]] = {}
        for instance, events in batches:
            if events:
                outbox.setdefault(instance, []).extend(events)
        for instance, events in self.pending.items():
            outbox.setdefault(instance, []).extend(events)
        self.pending = outbox
        self.count = sum(len(events) for events in outbox.values())

    def drop_room(self, room_id: str) -> None:
        """Relays still waiting for a room that ended here are not sent."""
        for instance, events in list(self.pending.items()):
            kept = [e for e in events if e[2] != room_id]
            self.count -= len(events) - len(kept)
            if kept:
                self.pending[instance] = kept
            else:
                del self.pending[instance]

    def purge(self, now: float) -> None:
        """Forget acknowledged relays older than ``replay_window``."""
        sent, limit = self.sent, now - self.replay_window
        while sent and sent[0][0] < limit:
            self.sent_count -= len(sent.popleft()[2])
