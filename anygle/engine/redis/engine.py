"""The ``redis`` engine: many instances share queues, rooms, stats and bans through one Redis.

* **State** lives in the seed's keys (``user:``, ``socket:``, ``queue:``, ``room:``,
  ``stats:global``, ``banned:``) plus the extra keys listed in README.md.
* **Atomicity.**  Every change of shared state is one Lua script (``lua/`` next to this module,
  loaded with ``SCRIPT LOAD``, called with ``EVALSHA``, ``EVAL`` on ``NOSCRIPT``): matching
  removes both users from their queue and creates the room in one step, a room is ended by
  exactly one caller.
  The matching rules mirror :mod:`anygle.matching` / the memory engine.
* **Delivery.**  Each instance has one inbox, the stream ``inbox:{instance}``, read by a dedicated
  connection (``XREAD BLOCK`` from the last id seen: nothing is lost or repeated when that
  connection drops, unlike pub/sub).  Scripts append ``matched`` / ``partner left`` / ``kick``
  events for users of *other* instances; relays to a partner elsewhere are batched per reactor turn
  into one ``XADD`` per target inbox.  Partners on the same instance relay with a direct call and
  no Redis at all, so their chats go on through a Redis outage.
* **Order.**  Every command (relays and scripts alike) goes over one pipelined connection, and the
  relay batch is flushed before any script runs, so a partner never sees ``partner_left`` before
  the last messages, nor a message before ``matched`` (early events for a room not known yet are
  held back until its ``matched``).
* **Liveness** is :mod:`anygle.engine.redis.liveness`: a lease renewed by a thread (a busy
  reactor is not a dead instance), suspicion before reaping, fencing by epoch, Redis generations.
* **Outage.**  While Redis is unreachable, calls fail at once with :class:`EngineUnavailable`
  (``SERVICE_UNAVAILABLE`` for the client), ``health()`` says why, local chats go on, and the
  connections come back with a short backoff (0.1 s doubling to 2 s).  Relays to other instances
  are kept (up to ``outage_buffer`` frames; beyond, the sender is told ``NOT_DELIVERED``) and sent
  when Redis is back; relays cut off in flight are sent again, and so are those Redis had
  acknowledged in the last ``replay_window`` (10 s) when it comes back without its data (its
  inboxes may not have been read); the receiver drops what it already has (a sequence number per
  room and direction), so nothing is lost or repeated.
* **Registering again.**  On reconnect the instance renews its lease; if nothing changed it just
  goes on.  Otherwise it *reconciles* (``register.lua``): local changes Redis missed (dirty),
  or a Redis that lost its data (``LOST``: every user, queue entry, count and room is registered
  again, rooms with users of other instances included — a chat whose two users are still
  connected goes on), or a fenced instance (``REAPED``: its chats with other instances were
  ended by the reaper, their partners told; it ends them locally and registers the rest).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar

import msgpack
import txredisapi
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from anygle.engine.base import (
    AGE_CATEGORIES,
    MODES,
    QUEUE_TYPES,
    EngineConfig,
    EngineSink,
    EngineUnavailable,
    Match,
    Preferences,
    Stats,
)
from anygle.engine.redis.client import RedisAddress, RedisFactory
from anygle.engine.redis.liveness import LOST, REAPED, Beat, Liveness

__all__ = ["EngineUnavailable", "RedisEngine"]

QUEUES = tuple(f"{c}:{m}:{t}" for c in AGE_CATEGORIES for m in MODES for t in QUEUE_TYPES)
SCRIPTS = (
    "acquire",
    "ban",
    "check_bans",
    "connect",
    "disconnect",
    "heartbeat",
    "incr",
    "join",
    "leave_queue",
    "leave_room",
    "queue_status",
    "rate",
    "reap",
    "register",
    "release",
    "stats",
    "tick",
    "touch",
)

# Scripts whose loss in flight (connection dropped before the reply) leaves nothing to put right:
# they read, refresh TTLs, count, or reap other instances (idempotent).
SAFE_TO_LOSE = frozenset(
    {"check_bans", "heartbeat", "incr", "queue_status", "rate", "stats", "touch", "ban"}
)

_CONNECTION_ERRORS = (txredisapi.ConnectionError, ConnectionError, defer.CancelledError)


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


def load_scripts() -> dict[str, str]:
    """Every script with the shared helpers in front."""
    lua = resources.files("anygle.engine.redis") / "lua"
    common = (lua / "common.lua").read_text()
    return {name: common + "\n" + (lua / f"{name}.lua").read_text() for name in SCRIPTS}


@dataclass(slots=True)
class _Local:
    """A user connected to this instance."""

    ip: str
    socket_id: str
    prefs: Preferences | None = None  # while waiting
    joined_at: float = 0.0
    room: str | None = None


@dataclass(slots=True)
class _Room:
    """A room with at least one local user."""

    match: Match
    instances: dict[str, str]
    active: bool = False
    sent: int = 0  # relays sent to a partner on another instance (sequence number)
    seen: int = 0  # highest sequence number delivered from the partner (duplicates dropped)

    @property
    def local_only(self) -> bool:
        return len(set(self.instances.values())) == 1


class RedisEngine:
    """See the module docstring; README.md lists the keys."""

    name: ClassVar[str] = "redis"
    log = Logger()

    touch_interval: ClassVar[float] = 60.0
    reply_timeout: ClassVar[float] = 3.0
    startup_wait: ClassVar[float] = 5.0
    batch_max: ClassVar[int] = 500
    reap_batch: ClassVar[int] = 500  # users per reaping script call
    register_batch: ClassVar[int] = 1000  # users per registration script call
    outage_buffer: ClassVar[int] = 20000  # relays to other instances kept while Redis is away
    replay_window: ClassVar[float] = 10.0  # acknowledged relays sent again if Redis loses data

    def __init__(self, config: EngineConfig, clock: IReactorTime) -> None:
        from twisted.internet import reactor

        self.config = config
        self.clock = clock  # the engine's notion of "now" (cooldowns), as the memory engine
        self.reactor: Any = reactor  # real time: heartbeats, reconnects, batching
        self.instance = config.instance_id
        if not self.instance or ":" in self.instance or self.instance != self.instance.strip():
            # instance:{id}, instance:{id}:users … must not collide
            raise ValueError(f"bad instance id {self.instance!r}: non-empty, no ':' or spaces")
        self.inbox = f"inbox:{self.instance}"
        self.address = RedisAddress.parse(config.redis_url)
        self.sink: EngineSink | None = None
        self.scripts = load_scripts()
        self.shas: dict[str, str] = {}
        self.users: dict[str, _Local] = {}
        self.rooms: dict[str, _Room] = {}
        self._ended: dict[str, float] = {}  # room id -> when (recently ended here)
        self._early: dict[str, list[tuple[float, tuple[Any, ...]]]] = {}
        self._outbox: dict[str, list[tuple[Any, ...]]] = {}
        self._outboxed = 0  # events in _outbox
        self._inflight: dict[int, tuple[str, list[tuple[Any, ...]]]] = {}  # XADDs unanswered
        self._xadds = 0
        self._sent: deque[tuple[float, str, list[tuple[Any, ...]]]] = deque()  # acknowledged
        self._sent_count = 0
        self._flush_call: Any = None
        self._cmd: Any = None  # command connection (protocol) when connected
        self._reader: Any = None  # inbox connection
        self._cmd_factory: RedisFactory | None = None
        self._reader_factory: RedisFactory | None = None
        self._available = False
        self._registered = False  # registered at least once since start()
        self._dirty = False
        self._syncing: defer.Deferred[None] | None = None
        self._ready_waiters: list[defer.Deferred[None]] = []
        self._last_id = b"0-0"
        self._reading = False
        self._reason = "redis unavailable: not connected yet"
        self._stopping = False
        self._next_touch = 0.0
        self.liveness = Liveness(self, self.instance, self.address, self.reactor)
        self._total_matches = 0
        self._conns: dict[str, int] = {}  # ip -> connections counted by this instance
        self._bans_checked_at = -1e9  # reactor time of the last check_bans() that answered
        self._bans_seen: set[str] = set()  # local users it found banned
        self._last_stats: Stats | None = None
        self.counters = {
            "relayed_remote": 0,
            "relayed_local": 0,
            "resyncs": 0,
            "restores": 0,
            "undelivered": 0,
            "duplicates_dropped": 0,
            "held": 0,  # inbox events that came before their room's matched (held back)
        }

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, sink: EngineSink) -> defer.Deferred[None]:
        self.sink = sink
        self._stopping = False
        self._cmd_factory = RedisFactory(self.address, self._cmd_ready, self._cmd_lost)
        self._reader_factory = RedisFactory(self.address, self._reader_ready, self._reader_lost)
        for factory in (self._cmd_factory, self._reader_factory):
            factory.startConnecting(self._endpoint())
        self.liveness.start()
        return self.when_ready(self.startup_wait).addErrback(self._start_failed)

    def _start_failed(self, failure: Failure) -> None:
        failure.trap(EngineUnavailable)
        self.log.warn("redis engine started without Redis ({why}); retrying", why=self._reason)

    def _endpoint(self) -> Any:
        if self.address.path:
            return UNIXClientEndpoint(self.reactor, self.address.path, timeout=2)
        return HostnameEndpoint(self.reactor, self.address.host, self.address.port, timeout=2)

    def when_ready(self, timeout: float | None = None) -> defer.Deferred[None]:
        """Fires when the engine is usable; fails with EngineUnavailable after ``timeout``."""
        if self._available:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._ready_waiters.append(d)
        if timeout is not None:

            def expire() -> None:
                if not d.called:
                    self._ready_waiters.remove(d)
                    d.errback(EngineUnavailable(self._reason))

            call = self.reactor.callLater(timeout, expire)
            d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Clean stop: this instance's users leave at once (remote partners told)."""
        self._stopping = True
        self.liveness.stop()
        if self._available:
            try:
                self._flush_outbox()  # the last relays before their partners hear of the end
                yield self._reap_self()
            except Exception as e:
                self.log.warn("could not deregister cleanly: {e}", e=e)
        self._available = False
        self._reason = "redis unavailable: engine stopped"
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
                self._sink().on_partner_left(partner, room.match.room_id, "disconnected")
        self.users.clear()
        self.rooms.clear()
        for factory in (self._cmd_factory, self._reader_factory):
            if factory is not None:
                try:
                    yield factory.disconnect()
                except Exception:
                    pass

    def halt(self) -> None:
        """Stop as a process killed with ``SIGKILL`` would: no more lease renewals nor reaping,
        connections cut, nothing cleaned up in Redis (the other instances' reapers do that).
        For tests of failure detection; :meth:`stop` is the clean stop."""
        self._stopping = True
        self._available = False
        self._reason = "redis unavailable: engine halted"
        self.liveness.stop()
        for factory in (self._cmd_factory, self._reader_factory):
            if factory is not None:
                factory.stopTrying()
        self.drop_connections()

    def drop_connections(self) -> None:
        """Cut both Redis connections as a network blip would; they reconnect by themselves
        and the engine synchronises again.  For tests of reconnection (:meth:`halt` is a
        crash, :meth:`stop` a clean stop)."""
        for proto in (self._cmd, self._reader):
            if proto is not None and proto.transport is not None:
                proto.transport.abortConnection()

    def health(self) -> tuple[bool, str]:
        if not self._available:
            return False, self._reason
        if self._reader is None:
            return False, "redis unavailable: inbox connection down"
        return True, "ok"

    def _sink(self) -> EngineSink:
        assert self.sink is not None, "engine not started"
        return self.sink

    # --- connections ----------------------------------------------------------------------
    def _cmd_ready(self, proto: Any) -> None:
        if self._stopping:
            return
        self._cmd = proto
        self._reason = "redis unavailable: synchronising"
        self._sync()

    def _cmd_lost(self, proto: Any) -> None:
        if self._cmd is proto:
            self._cmd = None
            was = self._available
            self._available = False
            self._reason = f"redis unavailable: lost connection to {self.address}"
            if was and not self._stopping:
                self.log.warn("{reason}", reason=self._reason)
            self._requeue_inflight()

    def _reader_ready(self, proto: Any) -> None:
        if self._stopping:
            return
        self._reader = proto
        if not self._reading:
            self._read()

    def _reader_lost(self, proto: Any) -> None:
        if self._reader is proto:
            self._reader = None

    def _sync(self) -> None:
        """Load the scripts, then register (first time, or when dirty/reaped) or just go on."""
        if self._syncing is not None:
            return
        proto = self._cmd
        self._syncing = defer.ensureDeferred(self._do_sync())
        self._syncing.addErrback(self._sync_failed, proto)
        self._syncing.addBoth(self._sync_done)

    async def _do_sync(self) -> None:
        proto = self._cmd
        if proto is None:
            return
        for name, source in self.scripts.items():
            sha = await proto.execute_command("SCRIPT", "LOAD", source)
            self.shas[name] = sha.decode() if isinstance(sha, bytes) else sha
        if not self._registered:
            await self._raw("DEL", self.inbox)
            await self._reap_self()  # whatever a previous process of this id left behind
            await self._register(restore=True)
            self._registered = True
        else:
            args = self.liveness.heartbeat_args(_ms(self.reactor.seconds()))
            reply = await self._raw("EVALSHA", self.shas["heartbeat"], 0, *args[:4], 0, args[5])
            standing = self.liveness.parse(reply).standing
            if standing == REAPED:
                await self._rejoin_after_reap()
            elif standing == LOST:
                self.log.warn("Redis lost its data: restoring this instance's state")
                self.counters["restores"] += 1
                await self._register(restore=True)
                self._replay_sent()
            elif self._dirty:
                await self._register(restore=False)
        if self._cmd is proto:
            self._available = True
            self._reason = "ok"
            self._flush_outbox()  # what was relayed meanwhile, before anything else
            waiters, self._ready_waiters = self._ready_waiters, []
            for d in waiters:
                d.callback(None)

    def _sync_failed(self, failure: Failure, proto: Any) -> None:
        self.log.warn("redis sync failed: {f}", f=failure.getErrorMessage())
        self._reason = f"redis unavailable: {failure.getErrorMessage()}"
        if proto is not None and proto is self._cmd and proto.transport is not None:
            proto.transport.loseConnection()  # reconnect and try again

    def _sync_done(self, _: Any) -> None:
        self._syncing = None

    async def _rejoin_after_reap(self) -> None:
        """Fenced: another instance reaped this one (Redis kept its data).  Its chats with users
        of other instances were ended by the reaper (the partners were told): end them here too,
        and register the rest under a new epoch."""
        await self._reap_self()  # anything written after the reap
        for room_id, room in list(self.rooms.items()):
            if not room.local_only:
                self._end_locally(room_id)
        await self._register(restore=True)

    async def _register(self, restore: bool) -> None:
        """Reconcile Redis with the local state (``register.lua``) under a new epoch, remove
        users Redis has of this instance that are gone, queue the waiting users again (with
        their original join time).  ``restore``: Redis lost its data (or holds nothing of this
        instance): local rooms are registered unless Redis contradicts them, rooms with users of
        other instances included.  Otherwise a local room is kept only where Redis agrees."""
        now = self.clock.seconds()
        self.counters["resyncs"] += 1
        self._dirty = False
        epoch = self.liveness.new_epoch()
        users = []
        for user_id, local in self.users.items():
            room = self.rooms.get(local.room) if local.room else None
            waiting = 1 if local.prefs is not None and room is None else 0
            if room is None:
                local.room = None
                users.append((user_id, local.ip, local.socket_id, "", "", "", "", "", "", waiting))
                continue
            m = room.match
            partner = m.partner_of(user_id)
            pinst = room.instances.get(partner, self.instance)
            users.append(
                (
                    user_id,
                    local.ip,
                    local.socket_id,
                    m.room_id,
                    partner,
                    pinst,
                    m.mode,
                    m.initiator,
                    m.responder,
                    waiting,
                )
            )
        ended: list[str] = []
        step = self.register_batch
        for i in range(0, max(len(users), 1), step):
            first = i == 0
            reply = await self._raw(
                "EVALSHA",
                self.shas["register"],
                0,
                self.instance,
                epoch,
                _ms(self.liveness.lease_ttl),
                _ms(now),
                uuid.uuid4().hex,
                1 if restore else 0,
                _ms(self.liveness.provisional_ttl),
                msgpack.packb(
                    (
                        users[i : i + step],
                        self._total_matches if first else 0,
                        self._conns if first else {},
                        1 if first else 0,
                    )
                ),
            )
            generation, gone = msgpack.unpackb(reply, raw=False)
            if first:
                self.liveness.registered(epoch, generation)
            ended.extend(gone)
        for user_id in ended:
            local = self.users.get(user_id)
            if local is not None and local.room is not None:
                self._end_locally(local.room)
        await self._prune(now)
        waiting = sorted(
            ((u, lu) for u, lu in self.users.items() if lu.prefs is not None and lu.room is None),
            key=lambda x: x[1].joined_at,
        )
        ds = []
        for user_id, local in waiting:  # pipelined, in join order
            d = self._raw("EVALSHA", self.shas["join"], 0, *self._join_args(user_id, local, now))
            ds.append(d.addCallback(self._rejoined, user_id, now))
        if ds:
            await defer.gatherResults(ds, consumeErrors=True)

    async def _prune(self, now: float) -> None:
        """Remove the users Redis holds for this instance that are not connected here any more
        (they left during an outage; or stand-ins another instance restored): partners told."""
        members = await self._raw("SMEMBERS", f"instance:{self.instance}:users")
        stale = [_text(m) for m in members or ()]
        stale = [u for u in stale if u not in self.users]
        ds = [
            self._raw(
                "EVALSHA", self.shas["disconnect"], 0, u, self.instance, _ms(now)
            ).addCallback(self._left, "disconnected")
            for u in stale
        ]
        if ds:
            await defer.gatherResults(ds, consumeErrors=True)

    def _end_locally(self, room_id: str) -> None:
        """End a room here only (Redis has it ended, or never will have it): its local users are
        told ``partner_disconnected``, relays still waiting for it are dropped."""
        room = self.rooms.get(room_id)
        self._forget_room(room_id)
        if room is None:
            return
        for user_id in (room.match.initiator, room.match.responder):
            local = self.users.get(user_id)
            if local is not None and local.room == room_id:
                local.room = None
                self._sink().on_partner_left(user_id, room_id, "disconnected")
        for instance, events in list(self._outbox.items()):
            kept = [e for e in events if e[2] != room_id]
            self._outboxed -= len(events) - len(kept)
            if kept:
                self._outbox[instance] = kept
            else:
                del self._outbox[instance]

    def _rejoined(self, reply: bytes, user_id: str, now: float) -> None:
        try:
            self._join_result(user_id, reply, now)
        except EngineUnavailable:
            pass

    async def _reap_self(self) -> None:
        """Remove this instance's users from Redis, a batch per script call."""
        while True:
            _, more = await self._raw(
                "EVALSHA",
                self.shas["reap"],
                0,
                self.instance,
                _ms(self.clock.seconds()),
                self.reap_batch,
            )
            if not more:
                return

    # --- commands -------------------------------------------------------------------------
    def _raw(self, *args: Any) -> defer.Deferred[Any]:
        proto = self._cmd
        if proto is None:
            return defer.fail(EngineUnavailable(self._reason))
        try:
            return proto.execute_command(*args)
        except _CONNECTION_ERRORS as e:
            return defer.fail(EngineUnavailable(str(e)))

    def _script(self, name: str, *args: Any) -> defer.Deferred[Any]:
        """EVALSHA (EVAL on NOSCRIPT); connection problems become EngineUnavailable."""
        if not self._available:
            return defer.fail(EngineUnavailable(self._reason))
        self._flush_outbox()
        d = self._raw("EVALSHA", self.shas[name], 0, *args)
        d.addErrback(self._noscript, name, args)
        d.addErrback(self._unavailable, name not in SAFE_TO_LOSE)
        return d

    def _noscript(self, failure: Failure, name: str, args: tuple[Any, ...]) -> Any:
        failure.trap(txredisapi.ResponseError)
        if not str(failure.value).startswith("NOSCRIPT"):
            return failure
        return self._raw("EVAL", self.scripts[name], 0, *args)

    def _unavailable(self, failure: Failure, changes_state: bool = False) -> Any:
        if failure.check(EngineUnavailable, *_CONNECTION_ERRORS):
            if changes_state:
                # the script may or may not have run: Redis is resynchronised on reconnect
                self._dirty = True
            if not failure.check(EngineUnavailable):
                raise EngineUnavailable(f"redis unavailable: {failure.getErrorMessage()}")
        return failure

    def _require(self) -> defer.Deferred[None]:
        """Wait for the first registration after start() (briefly); afterwards fail fast."""
        if self._available:
            return defer.succeed(None)
        if not self._registered and not self._stopping and self._cmd_factory is not None:
            return self.when_ready(self.startup_wait)
        return defer.fail(EngineUnavailable(self._reason))

    # --- liveness (anygle.engine.redis.liveness calls these), TTLs ------------------------------
    def liveness_script(self, name: str, *args: Any) -> defer.Deferred[Any]:
        return self._script(name, *args)

    def liveness_usable(self) -> bool:
        return self._available and self._syncing is None and not self._stopping

    def liveness_housekeeping(self) -> None:
        self._purge()
        if self.liveness.beat_gap > 1.0:
            # This process itself was frozen or busy: replies may be waiting unread in the
            # sockets, so silence proves nothing about Redis yet (checked again next beat).
            return
        for proto, limit in ((self._cmd, self.reply_timeout), (self._reader, 5.0)):
            if proto is not None and proto.stalled(limit) and proto.transport is not None:
                self.log.warn("redis connection stalled: reconnecting")
                proto.transport.abortConnection()
        if self.liveness_usable() and self.reactor.seconds() >= self._next_touch:
            self._next_touch = self.reactor.seconds() + self.touch_interval
            self._touch().addErrback(self._log_failure, "touch")

    def liveness_beaten(self, beat: Beat) -> None:
        self._total_matches = max(self._total_matches, beat.total_matches)

    def liveness_lost(self, standing: str) -> None:
        """The lease was refused: stop using Redis until registered again (the sync finds out
        whether this instance was reaped or Redis lost its data)."""
        if self._stopping:
            return
        if self._available:
            self._available = False
            self._reason = "redis unavailable: registering again"
        if self._cmd is not None:
            self._sync()

    def _touch(self) -> defer.Deferred[Any]:
        rooms = [r for r, room in self.rooms.items() if room.active]
        for r in rooms:
            self.rooms[r].active = False
        users = [(u, local.socket_id) for u, local in self.users.items()]
        ds = []
        for i in range(0, max(len(users), len(rooms), 1), 1000):
            payload = msgpack.packb(
                (users[i : i + 1000], rooms[i : i + 1000], _ms(self.clock.seconds()))
            )
            ds.append(self._script("touch", payload))
        return defer.gatherResults(ds, consumeErrors=True)

    def _purge(self) -> None:
        sent, limit = self._sent, self.reactor.seconds() - self.replay_window
        while sent and sent[0][0] < limit:
            self._sent_count -= len(sent.popleft()[2])
        limit = self.reactor.seconds() - 60.0
        ended = self._ended
        while ended:  # insertion order is time order
            room_id = next(iter(ended))
            if ended[room_id] > limit:
                break
            del ended[room_id]
        if self._early:
            limit = self.reactor.seconds() - 30.0
            for room_id in [r for r, evs in self._early.items() if evs[0][0] < limit]:
                del self._early[room_id]

    def _log_failure(self, failure: Failure, what: str) -> None:
        if failure.check(EngineUnavailable):
            return
        self.log.failure("{what} failed", failure, what=what)

    # --- inbox ----------------------------------------------------------------------------
    def _read(self) -> None:
        proto = self._reader
        if proto is None or self._stopping:
            self._reading = False
            return
        self._reading = True
        try:
            d = proto.execute_command(
                "XREAD", "COUNT", 1000, "BLOCK", 1000, "STREAMS", self.inbox, self._last_id
            )
        except _CONNECTION_ERRORS:
            self._reading = False
            return
        d.addCallbacks(self._got, self._read_failed)

    def _got(self, reply: Any) -> None:
        try:
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    try:
                        for event in msgpack.unpackb(fields[1], raw=False):
                            self._dispatch(event)
                    except Exception:
                        self.log.failure("bad inbox entry {id}", id=entry_id)
        finally:
            self._read()

    def _read_failed(self, failure: Failure) -> None:
        self._reading = False
        if not failure.check(*_CONNECTION_ERRORS):
            self.log.failure("inbox read failed", failure)
            if self._reader is not None and self._reader.transport is not None:
                self._reader.transport.loseConnection()
        elif self._reader is not None and self._reader.connected:
            self.reactor.callLater(0.1, self._read)

    def _dispatch(self, event: list[Any]) -> None:
        kind = event[0]
        if kind == "r":
            self._deliver(event[1], event[2], event[3], event[4] if len(event) > 4 else 0)
        elif kind == "m":
            self._apply_match(event[1], None)
        elif kind == "l":
            self._partner_left(event[1], event[2], event[3])
        elif kind == "k":
            if event[1] in self.users:
                self._sink().on_kick(event[1], event[2], event[3])

    def _hold(self, room_id: str, event: tuple[Any, ...]) -> None:
        """An event for a room whose ``matched`` has not reached us yet."""
        self._early.setdefault(room_id, []).append((self.reactor.seconds(), event))
        self.counters["held"] += 1

    def _deliver(self, user_id: str, room_id: str, frame: dict[str, Any], seq: int = 0) -> None:
        local = self.users.get(user_id)
        if local is None:
            return
        if local.room == room_id:
            room = self.rooms.get(room_id)
            if seq and room is not None:
                if seq <= room.seen:  # sent again after a reconnect: already delivered
                    self.counters["duplicates_dropped"] += 1
                    return
                room.seen = seq
            self._sink().on_relay(user_id, room_id, frame)
        elif room_id not in self.rooms and room_id not in self._ended:
            self._hold(room_id, ("r", user_id, room_id, frame, seq))

    def _partner_left(self, user_id: str, room_id: str, reason: str) -> None:
        local = self.users.get(user_id)
        if local is None:
            return
        if local.room == room_id:
            local.room = None
            self._forget_room(room_id)
            self._sink().on_partner_left(user_id, room_id, reason)
        elif room_id not in self.rooms and room_id not in self._ended:
            self._hold(room_id, ("l", user_id, room_id, reason))

    def _forget_room(self, room_id: str) -> None:
        self.rooms.pop(room_id, None)
        self._ended[room_id] = self.reactor.seconds()

    def _apply_match(self, m: list[Any], matched_at: float | None) -> Match:
        room_id, mode, initiator, responder, interests, shared, at_ms, instances = m
        match = Match(
            room_id=room_id,
            mode=mode,
            initiator=initiator,
            responder=responder,
            interests={k: tuple(v) for k, v in interests.items()},
            shared_interests=tuple(shared),
            matched_at=matched_at if matched_at is not None else at_ms / 1000.0,
        )
        local = [
            u
            for u in (initiator, responder)
            if instances.get(u) == self.instance and u in self.users
        ]
        if not local:
            return match
        self.rooms[room_id] = _Room(match, dict(instances))
        for u in local:
            lu = self.users[u]
            if lu.room is not None and lu.room != room_id:
                self.log.error("{u} matched into {r} while in {o}", u=u, r=room_id, o=lu.room)
            lu.room, lu.prefs = room_id, None
        sink = self._sink()
        for u in local:
            sink.on_matched(u, match)
        for _, event in self._early.pop(room_id, ()):
            self._dispatch(list(event))
        return match

    # --- relays ---------------------------------------------------------------------------
    def relay(self, partner_id: str, room_id: str, frame: dict) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        room.active = True
        instance = room.instances.get(partner_id)
        if instance == self.instance:
            local = self.users.get(partner_id)
            if local is not None and local.room == room_id:
                self.counters["relayed_local"] += 1
                self._sink().on_relay(partner_id, room_id, frame)
            return
        if instance is None:
            return
        if not self._available and self._outboxed >= self.outage_buffer:
            self._undelivered(partner_id, room_id, frame)
            return
        room.sent += 1
        self.counters["relayed_remote"] += 1
        batch = self._outbox.setdefault(instance, [])
        batch.append(("r", partner_id, room_id, frame, room.sent))
        self._outboxed += 1
        if not self._available:
            return  # kept: sent when Redis is back
        if len(batch) >= self.batch_max:
            self._flush_outbox()
        elif self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self._flush_outbox)

    def _flush_outbox(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if not self._outbox or not self._available:
            return
        outbox, self._outbox, self._outboxed = self._outbox, {}, 0
        for instance, events in outbox.items():
            self._xadds += 1
            key = self._xadds
            self._inflight[key] = (instance, events)
            d = self._raw(
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
            d.addCallbacks(self._relayed, self._relay_failed, (key,), None, (key,))

    def _relayed(self, _: Any, key: int) -> None:
        entry = self._inflight.pop(key, None)
        if entry is not None:
            # kept a while: a Redis that dies before the receiver read them loses them with its
            # data, and the restore sends them again (the receiver drops what it has)
            self._sent.append((self.reactor.seconds(), entry[0], entry[1]))
            self._sent_count += len(entry[1])
            while self._sent_count > self.outage_buffer:
                self._sent_count -= len(self._sent.popleft()[2])

    def _relay_failed(self, failure: Failure, key: int) -> None:
        if failure.check(EngineUnavailable, *_CONNECTION_ERRORS):
            self._requeue_inflight()  # sent again after the reconnect (the receiver dedups)
            return
        entry = self._inflight.pop(key, None)
        if entry is None:
            return
        self.log.warn(
            "{n} relayed frames refused: {e}", n=len(entry[1]), e=failure.getErrorMessage()
        )
        for event in entry[1]:
            self._undelivered(event[1], event[2], event[3])

    def _requeue_inflight(self) -> None:
        """Relays whose XADD got no answer go back in front of the outbox, in order: whether
        they reached Redis is unknown, so they are sent again and the receiver drops the ones it
        has (sequence numbers)."""
        if not self._inflight:
            return
        outbox: dict[str, list[tuple[Any, ...]]] = {}
        for instance, events in self._inflight.values():
            outbox.setdefault(instance, []).extend(events)
        self._inflight.clear()
        for instance, events in self._outbox.items():
            outbox.setdefault(instance, []).extend(events)
        self._outbox = outbox
        self._outboxed = sum(len(events) for events in outbox.values())

    def _replay_sent(self) -> None:
        """Redis lost its data, and with it the relays its inboxes held that were not read yet:
        the recent acknowledged ones go in front of the outbox again, in order, for the rooms
        that go on (the receiver drops those it had already delivered)."""
        sent, self._sent, self._sent_count = self._sent, deque(), 0
        outbox: dict[str, list[tuple[Any, ...]]] = {}
        for _, instance, events in sent:
            kept = [e for e in events if e[2] in self.rooms]
            if kept:
                outbox.setdefault(instance, []).extend(kept)
        for instance, events in self._outbox.items():
            outbox.setdefault(instance, []).extend(events)
        self._outbox = outbox
        self._outboxed = sum(len(events) for events in outbox.values())

    def _undelivered(self, partner_id: str, room_id: str, frame: dict) -> None:
        """A relay that cannot be delivered: its sender is told (``NOT_DELIVERED``)."""
        self.counters["undelivered"] += 1
        room = self.rooms.get(room_id)
        tell = getattr(self.sink, "on_undelivered", None)
        if room is not None and tell is not None:
            sender = room.match.partner_of(partner_id)
            if sender in self.users:
                tell(sender, room_id, frame)

    # --- sessions -------------------------------------------------------------------------
    def _online_or_not(
        self, online: Callable[[], defer.Deferred[Any]], offline: Callable[[], Any]
    ) -> defer.Deferred[Any]:
        """Run ``online`` (the Redis part of a local change) now — or as soon as the
        synchronisation in progress is done; when Redis cannot be used, ``offline`` does the local
        part only and its value is the result: the instance is *dirty* and resyncs on reconnect."""

        def fallback(failure: Failure | None = None) -> Any:
            if failure is not None:
                failure.trap(EngineUnavailable)
            self._dirty = True
            return offline()

        if self._available:
            d = online()
        elif not self._stopping and (
            self._syncing is not None or (not self._registered and self._cmd_factory is not None)
        ):
            d = self.when_ready(self.startup_wait).addCallback(lambda _: online())
        else:
            return defer.maybeDeferred(fallback)
        return d.addErrback(fallback)

    def connect(self, user_id: str, ip: str) -> defer.Deferred[None]:
        local = _Local(ip, uuid.uuid4().hex)
        self.users[user_id] = local

        def online() -> defer.Deferred[None]:
            if self.users.get(user_id) is not local:
                return defer.succeed(None)  # gone again meanwhile
            return self._script(
                "connect", user_id, self.instance, ip, local.socket_id, _ms(self.clock.seconds())
            ).addCallback(lambda _: None)

        return self._online_or_not(online, lambda: None)  # offline: registered on reconnect

    def disconnect(self, user_id: str) -> defer.Deferred[None]:
        local = self.users.pop(user_id, None)
        taken = self._take_room(local)

        def online() -> defer.Deferred[None]:
            d = self._script("disconnect", user_id, self.instance, _ms(self.clock.seconds()))
            return d.addCallback(self._left, "disconnected").addCallback(lambda _: None)

        def offline() -> None:
            self._offline_partner_left(user_id, taken, "disconnected")

        return self._online_or_not(online, offline)

    def _take_room(self, local: _Local | None) -> tuple[str, _Room | None] | None:
        """Detach a local user from its room (before asking Redis to end it)."""
        if local is None or local.room is None:
            return None
        room_id, local.room = local.room, None
        room = self.rooms.pop(room_id, None)
        self._ended[room_id] = self.reactor.seconds()
        return room_id, room

    def _offline_partner_left(
        self, user_id: str, taken: tuple[str, _Room | None] | None, reason: str
    ) -> str | None:
        """Redis is unreachable: end the room here only (a local partner is told); Redis is put
        right on reconnect (dirty), which tells a partner on another instance."""
        self._dirty = True
        if taken is None or taken[1] is None:
            return None
        room_id, room = taken
        partner = room.match.partner_of(user_id)
        if room.instances.get(partner) == self.instance:
            self._partner_left(partner, room_id, reason)
        return partner

    def _left(self, reply: bytes, reason: str) -> str | None:
        """After leave_room/disconnect: tell a local partner; returns the partner id."""
        result = msgpack.unpackb(reply, raw=False)
        if not result:
            return None
        partner, partner_instance, room_id = result
        if partner_instance == self.instance:
            self._partner_left(partner, room_id, reason)
        self._forget_room(room_id)
        return partner

    # --- queues ---------------------------------------------------------------------------
    def _join_args(self, user_id: str, local: _Local, now: float) -> tuple[Any, ...]:
        prefs = local.prefs
        assert prefs is not None
        return (
            user_id,
            self.instance,
            prefs.queue,
            msgpack.packb(list(prefs.interests)),
            1 if prefs.interests_only else 0,
            _ms(local.joined_at),
            _ms(now),
            _ms(self.config.interest_timeout),
            uuid.uuid4().hex,
            self.config.match_history,
        )

    def join(self, user_id: str, prefs: Preferences, now: float) -> defer.Deferred[Match | None]:
        local = self.users.get(user_id)
        if local is not None and local.room is not None:
            raise RuntimeError(f"join while in a room: {user_id}")
        d = self._require()

        def go(_: Any) -> defer.Deferred[Match | None]:
            lu = self.users.get(user_id)
            if lu is None:
                raise RuntimeError(f"join before connect: {user_id}")
            lu.prefs, lu.joined_at = prefs, now
            d2 = self._script("join", *self._join_args(user_id, lu, now))
            d2.addCallback(lambda reply: self._join_result(user_id, reply, now))
            d2.addErrback(self._join_failed, user_id)
            return d2

        return d.addCallback(go)

    def _join_failed(self, failure: Failure, user_id: str) -> Failure:
        local = self.users.get(user_id)
        if local is not None and failure.check(EngineUnavailable):
            local.prefs = None
        return failure

    def _join_result(self, user_id: str, reply: bytes, now: float) -> Match | None:
        result = msgpack.unpackb(reply, raw=False)
        kind = result[0]
        if kind == "match":
            return self._apply_match(result[1], now)
        if kind == "banned":
            local = self.users.get(user_id)
            if local is not None:
                local.prefs = None
            self._sink().on_kick(user_id, "BANNED", f"banned: {result[1]}")
            return None
        if kind == "nouser":
            # reaped while alive (a long stall): register again, the client retries
            local = self.users.get(user_id)
            if local is not None:
                local.prefs = None
            self._dirty = True
            if self._available:
                self._available = False
                self._reason = "redis unavailable: resynchronising"
                self._sync()
            raise EngineUnavailable("this instance was reaped: resynchronising")
        return None  # 'queued', or 'inroom': matched meanwhile, matched event on its way

    def leave_queue(self, user_id: str) -> defer.Deferred[bool]:
        local = self.users.get(user_id)
        was_waiting = local is not None and local.prefs is not None
        if local is not None:
            local.prefs = None
        return self._online_or_not(
            lambda: self._script("leave_queue", user_id).addCallback(bool), lambda: was_waiting
        )

    def tick(self, now: float) -> defer.Deferred[int]:
        if not self._available:
            return defer.succeed(0)
        d = self._script(
            "tick",
            self.instance,
            _ms(now),
            _ms(self.config.interest_timeout),
            uuid.uuid4().hex[:24],
            self.config.match_history,
            *QUEUES,
        )

        def made(reply: bytes | None) -> int:
            if not reply:
                return 0
            matches = msgpack.unpackb(reply, raw=False)
            for m in matches:
                self._apply_match(m, now)
            return len(matches)

        def failed(f: Failure) -> int:
            f.trap(EngineUnavailable)
            return 0

        return d.addCallbacks(made, failed)

    def queue_status(self, user_ids: list[str]) -> defer.Deferred[dict[str, tuple[int, float]]]:
        if not user_ids:
            return defer.succeed({})
        d = self._script("queue_status", *user_ids)

        def done(reply: bytes) -> dict[str, tuple[int, float]]:
            return {
                u: (int(pos), round(float(est), 1))
                for u, pos, est in msgpack.unpackb(reply, raw=False)
            }

        return d.addCallback(done)

    # --- rooms ----------------------------------------------------------------------------
    def leave_room(self, user_id: str, reason: str) -> defer.Deferred[str | None]:
        taken = self._take_room(self.users.get(user_id))

        def online() -> defer.Deferred[str | None]:
            d = self._script(
                "leave_room",
                user_id,
                self.instance,
                reason,
                _ms(self.clock.seconds()),
                _ms(self.config.rematch_cooldown),
            )
            return d.addCallback(self._left, reason)

        return self._online_or_not(
            online, lambda: self._offline_partner_left(user_id, taken, reason)
        )

    # --- stats ----------------------------------------------------------------------------
    def stats(self) -> defer.Deferred[Stats]:
        d = self._script("stats", *QUEUES)

        def done(reply: bytes) -> Stats:
            online, in_queue, chats, total, waits, queues = msgpack.unpackb(reply, raw=False)
            self._total_matches = max(self._total_matches, int(total))
            stats = Stats(
                total_online=int(online),
                in_queue=int(in_queue),
                active_chats=int(chats),
                avg_match_time=round(sum(waits) / len(waits), 1) if waits else 0.0,
                total_matches=int(total),
                queues={q: int(n) for q, n in queues.items()} if queues else {},
            )
            self._last_stats = stats
            return stats

        d.addCallback(done)
        d.addCallback(self._with_moderation_counts)
        return d

    def _with_moderation_counts(self, stats: Stats) -> defer.Deferred[Stats]:
        """Add the ``stats:moderation`` hash (``{tier}:{category}:{outcome}`` → count)."""
        d = self._raw("HGETALL", "stats:moderation").addErrback(self._unavailable)

        def add(reply: Any) -> Stats:
            pairs = (
                reply.items()
                if isinstance(reply, dict)
                else zip(reply[::2], reply[1::2], strict=True)
            )
            stats.moderation = {_text(k): int(v) for k, v in pairs}
            return stats

        return d.addCallback(add)

    def record_moderation(self, tier: str, category: str, outcome: str) -> None:
        if not self._available:
            return  # a count lost in an outage is acceptable; the action itself is not
        d = self._raw("HINCRBY", "stats:moderation", f"{tier}:{category}:{outcome}", 1)
        d.addErrback(lambda f: f.trap(EngineUnavailable, *_CONNECTION_ERRORS))

    # --- counters and bans ----------------------------------------------------------------
    def incr(self, key: str, ttl: float) -> defer.Deferred[int]:
        return self._script("incr", key, max(1, _ms(ttl))).addCallback(int)

    def get_count(self, key: str) -> defer.Deferred[int]:
        if not self._available:
            return defer.fail(EngineUnavailable(self._reason))
        d = self._raw("GET", f"count:{key}").addErrback(self._unavailable)
        return d.addCallback(lambda v: int(v) if v is not None else 0)

    def get_ban(self, user_id: str | None, ip: str | None) -> defer.Deferred[str | None]:
        """Exact, except for a user connected here whose ban check (``check_bans``, polled every
        second by the hub) answered less than 2 s ago: that answer is reused, saving a round trip
        on every join — ``join`` itself refuses a banned user atomically (``BANNED`` + kick)."""
        local = self.users.get(user_id) if user_id is not None else None
        if (
            local is not None
            and local.ip == ip
            and user_id not in self._bans_seen
            and self.reactor.seconds() - self._bans_checked_at < 2.0
        ):
            return defer.succeed(None)
        keys = []
        if user_id is not None:
            keys.append(f"banned:users:{user_id}")
        if ip is not None:
            keys.append(f"banned:ips:{ip}")
        if not keys:
            return defer.succeed(None)
        d = self._require()
        d.addCallback(lambda _: self._raw("MGET", *keys))
        d.addErrback(self._unavailable)

        def first(values: list[bytes | None]) -> str | None:
            for v in values:
                if v is not None:
                    return v.decode("utf-8", "replace")
            return None

        return d.addCallback(first)

    def ban(self, kind: str, value: str, reason: str, ttl: float | None) -> defer.Deferred[None]:
        if kind not in ("users", "ips"):
            raise ValueError(f"bad ban kind {kind!r}")
        ttl_ms = 0 if ttl is None else max(1, _ms(ttl))
        d = self._script("ban", kind, value, reason, ttl_ms, self.instance)
        return d.addCallback(lambda _: None)

    def unban(self, kind: str, value: str) -> defer.Deferred[bool]:
        if not self._available:
            return defer.fail(EngineUnavailable(self._reason))
        d = self._raw("DEL", f"banned:{kind}:{value}").addErrback(self._unavailable)
        return d.addCallback(lambda n: bool(n))

    def check_bans(self, users: dict[str, str]) -> defer.Deferred[dict[str, str]]:
        """Polled every second by the hub: one script call per 2000 users, whose reply lists the
        banned ones only (an ``MGET`` of every key cost a 25 ms reactor stall per 4000 users).
        Nothing is found while Redis is unreachable (no log noise every second)."""
        if not users or not self._available:
            return defer.succeed({})
        items = list(users.items())
        ds = [
            self._script("check_bans", msgpack.packb(items[i : i + 2000]))
            for i in range(0, len(items), 2000)
        ]

        asked_at = self.reactor.seconds()

        def found(replies: list[bytes]) -> dict[str, str]:
            banned = {
                u: r
                for reply in replies
                for u, r in msgpack.unpackb(reply, raw=False, unicode_errors="replace")
            }
            self._bans_checked_at, self._bans_seen = asked_at, set(banned)
            return banned

        def failed(f: Failure) -> dict[str, str]:
            if f.check(defer.FirstError):
                f = f.value.subFailure
            f.trap(EngineUnavailable, *_CONNECTION_ERRORS)
            return {}

        return defer.gatherResults(ds, consumeErrors=True).addCallbacks(found, failed)

    # --- abuse limits (shared by all instances) -------------------------------------------
    def rate(self, key: str, limit: int, window: float) -> defer.Deferred[bool]:
        d = self._script("rate", key, limit, max(1, _ms(window)), _ms(self.clock.seconds()))
        return d.addCallback(bool)

    def acquire_connection(self, ip: str, limit: int) -> defer.Deferred[bool]:
        d = self._script("acquire", ip, limit, self.instance)

        def done(ok: int) -> bool:
            if ok:
                self._conns[ip] = self._conns.get(ip, 0) + 1
            return bool(ok)

        return d.addCallback(done)

    def release_connection(self, ip: str) -> defer.Deferred[None]:
        count = self._conns.get(ip, 0)
        if count <= 0:
            return defer.succeed(None)
        if count == 1:
            del self._conns[ip]
        else:
            self._conns[ip] = count - 1
        return self._online_or_not(  # offline: the counts are registered again on reconnect
            lambda: self._script("release", ip, self.instance).addCallback(lambda _: None),
            lambda: None,
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
