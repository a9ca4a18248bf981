"""Registering an instance in Redis, and registering it again after a connection was lost.

On every (re)connection of the command connection the scripts are loaded, then:

* the first time since ``start()``: whatever a previous process of this id left is reaped, and
  the instance registers (``register.lua``) with everything it holds;
* afterwards the lease is renewed; if nothing changed the instance just goes on.  Otherwise it
  *reconciles*: local changes Redis missed (dirty), or a Redis that lost its data (``LOST``:
  every user, queue entry, count and room is registered again, rooms with users of other
  instances included — a chat whose two users are still connected goes on), or a fenced
  instance (``REAPED``: its chats with other instances were ended by the reaper, their partners
  told; it ends them locally and registers the rest).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from anygle.engine.base import EngineUnavailable
from anygle.engine.redis.liveness import LOST, REAPED
from anygle.engine.redis.scripts import ms, text

if TYPE_CHECKING:
    from anygle.engine.redis.engine import RedisEngine

__all__ = ["Registration"]


class Registration:
    """Synchronises ``engine``'s local state with Redis (see the module docstring)."""

    log = Logger()

    def __init__(self, engine: RedisEngine) -> None:
        self.engine = engine
        self.status = engine.status
        self.commands = engine.commands
        self.local = engine.local
        self.registered = False  # registered at least once since start()
        self.syncing: defer.Deferred[None] | None = None
        self._ready_waiters: list[defer.Deferred[None]] = []

    # --- waiting for it -------------------------------------------------------------------
    def when_ready(self, timeout: float | None = None) -> defer.Deferred[None]:
        """Fires when the engine is usable; fails with EngineUnavailable after ``timeout``."""
        if self.status.available:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._ready_waiters.append(d)
        if timeout is not None:

            def expire() -> None:
                if not d.called:
                    self._ready_waiters.remove(d)
                    d.errback(EngineUnavailable(self.status.reason))

            call = self.engine.reactor.callLater(timeout, expire)
            d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def _ready(self) -> None:
        """Registered (again): Redis may be used."""
        self.status.available = True
        self.status.reason = "ok"
        self.engine.outbox.flush()  # what was relayed meanwhile, before anything else
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def require(self) -> defer.Deferred[None]:
        """Wait for the first registration after start() (briefly); afterwards fail fast."""
        if self.status.available:
            return defer.succeed(None)
        if not self.registered and not self.status.stopping and self.status.started:
            return self.when_ready(self.engine.startup_wait)
        return defer.fail(EngineUnavailable(self.status.reason))

    def online_or_not(
        self, online: Callable[[], defer.Deferred[Any]], offline: Callable[[], Any]
    ) -> defer.Deferred[Any]:
        """Run ``online`` (the Redis part of a local change) now — or as soon as the
        synchronisation in progress is done; when Redis cannot be used, ``offline`` does the local
        part only and its value is the result: the instance is *dirty* and resyncs on reconnect."""

        def fallback(failure: Failure | None = None) -> Any:
            if failure is not None:
                failure.trap(EngineUnavailable)
            self.status.dirty = True
            return offline()

        if self.status.available:
            d = online()
        elif not self.status.stopping and (
            self.syncing is not None or (not self.registered and self.status.started)
        ):
            d = self.when_ready(self.engine.startup_wait).addCallback(lambda _: online())
        else:
            return defer.maybeDeferred(fallback)
        return d.addErrback(fallback)

    # --- registering ----------------------------------------------------------------------
    def sync(self) -> None:
        """Load the scripts, then register (first time, or when dirty/reaped) or just go on."""
        if self.syncing is not None:
            return
        proto = self.commands.proto
        self.syncing = defer.ensureDeferred(self._sync())
        self.syncing.addErrback(self._failed, proto)
        self.syncing.addBoth(self._done)

    async def _sync(self) -> None:
        e = self.engine
        proto = self.commands.proto
        if proto is None:
            return
        await self.commands.load(proto)
        if not self.registered:
            await self.commands.raw("DEL", e.inbox.stream)
            await self.reap_self()  # whatever a previous process of this id left behind
            await self.register(restore=True)
            self.registered = True
        else:
            args = e.liveness.heartbeat_args(ms(e.reactor.seconds()))
            reply = await self.commands.evalsha("heartbeat", *args[:4], 0, args[5])
            standing = e.liveness.parse(reply).standing
            if standing == REAPED:
                await self._rejoin_after_reap()
            elif standing == LOST:
                self.log.warn("Redis lost its data: restoring this instance's state")
                e.counters["restores"] += 1
                await self.register(restore=True)
                e.outbox.replay_sent(self.local.rooms)
            elif self.status.dirty:
                await self.register(restore=False)
        if self.commands.proto is proto:
            self._ready()

    def _failed(self, failure: Failure, proto: Any) -> None:
        self.log.warn("redis sync failed: {f}", f=failure.getErrorMessage())
        self.status.reason = f"redis unavailable: {failure.getErrorMessage()}"
        if proto is not None and proto is self.commands.proto and proto.transport is not None:
            proto.transport.loseConnection()  # reconnect and try again

    def _done(self, _: Any) -> None:
        self.syncing = None

    async def _rejoin_after_reap(self) -> None:
        """Fenced: another instance reaped this one (Redis kept its data).  Its chats with users
        of other instances were ended by the reaper (the partners were told): end them here too,
        and register the rest under a new epoch."""
        await self.reap_self()  # anything written after the reap
        for room_id, room in list(self.local.rooms.items()):
            if not room.local_only:
                self.engine._end_locally(room_id)
        await self.register(restore=True)

    async def register(self, restore: bool) -> None:
        """Reconcile Redis with the local state (``register.lua``) under a new epoch, remove
        users Redis has of this instance that are gone, queue the waiting users again (with
        their original join time).  ``restore``: Redis lost its data (or holds nothing of this
        instance): local rooms are registered unless Redis contradicts them, rooms with users of
        other instances included.  Otherwise a local room is kept only where Redis agrees."""
        e = self.engine
        now = e.clock.seconds()
        e.counters["resyncs"] += 1
        self.status.dirty = False
        epoch = e.liveness.new_epoch()
        users = []
        for user_id, local in self.local.users.items():
            room = self.local.rooms.get(local.room) if local.room else None
            waiting = 1 if local.prefs is not None and room is None else 0
            if room is None:
                local.room = None
                users.append((user_id, local.ip, local.socket_id, "", "", "", "", "", "", waiting))
                continue
            m = room.match
            partner = m.partner_of(user_id)
            pinst = room.instances.get(partner, e.instance)
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
        step = e.register_batch
        for i in range(0, max(len(users), 1), step):
            first = i == 0
            reply = await self.commands.evalsha(
                "register",
                e.instance,
                epoch,
                ms(e.liveness.lease_ttl),
                ms(now),
                uuid.uuid4().hex,
                1 if restore else 0,
                ms(e.liveness.provisional_ttl),
                msgpack.packb(
                    (
                        users[i : i + step],
                        e.records.total_matches if first else 0,
                        e.records.conns if first else {},
                        1 if first else 0,
                    )
                ),
            )
            generation, gone = msgpack.unpackb(reply, raw=False)
            if first:
                e.liveness.registered(epoch, generation)
            ended.extend(gone)
        for user_id in ended:
            lu = self.local.users.get(user_id)
            if lu is not None and lu.room is not None:
                e._end_locally(lu.room)
        await self._prune(now)
        queued = sorted(
            (
                (u, lu)
                for u, lu in self.local.users.items()
                if lu.prefs is not None and lu.room is None
            ),
            key=lambda x: x[1].joined_at,
        )
        ds = []
        for user_id, lu in queued:  # pipelined, in join order
            d = self.commands.evalsha("join", *e._join_args(user_id, lu, now))
            ds.append(d.addCallback(self._rejoined, user_id, now))
        if ds:
            await defer.gatherResults(ds, consumeErrors=True)

    async def _prune(self, now: float) -> None:
        """Remove the users Redis holds for this instance that are not connected here any more
        (they left during an outage; or stand-ins another instance restored): partners told."""
        e = self.engine
        members = await self.commands.raw("SMEMBERS", f"instance:{e.instance}:users")
        stale = [text(m) for m in members or ()]
        stale = [u for u in stale if u not in self.local.users]
        ds = [
            self.commands.evalsha("disconnect", u, e.instance, ms(now)).addCallback(
                self.local.left, "disconnected"
            )
            for u in stale
        ]
        if ds:
            await defer.gatherResults(ds, consumeErrors=True)

    def _rejoined(self, reply: bytes, user_id: str, now: float) -> None:
        try:
            self.engine._join_result(user_id, reply, now)
        except EngineUnavailable:
            pass

    async def reap_self(self) -> None:
        """Remove this instance's users from Redis, a batch per script call."""
        e = self.engine
        while True:
            _, more = await self.commands.evalsha(
                "reap", e.instance, ms(e.clock.seconds()), e.reap_batch
            )
            if not more:
                return
