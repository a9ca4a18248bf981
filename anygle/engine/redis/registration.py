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
from typing import Any, Protocol

import msgpack
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from anygle.engine.base import EngineUnavailable
from anygle.engine.redis.delivery import Outbox
from anygle.engine.redis.liveness import LOST, REAPED, Liveness
from anygle.engine.redis.local import Local, LocalUser
from anygle.engine.redis.scripts import Commands, Status, ms, text

__all__ = ["Registration", "RegistrationHost"]


class RegistrationHost(Protocol):
    """What :class:`Registration` needs from its owner (the engine)."""

    def registered_totals(self) -> tuple[int, dict[str, int]]:
        """What the instance registers besides its users: the highest total of matches it has
        seen and the connections it counted per abuse key."""

    def end_locally(self, room_id: str) -> None:
        """End a room here only (Redis has it ended): its local users are told."""

    def rejoin(self, user_id: str, user: LocalUser, now: float) -> defer.Deferred[Any]:
        """Queue a waiting user again, with its original join time."""


class Registration:
    """Synchronises the local state (``local``) with Redis (see the module docstring).

    ``reactor`` gives the timers, ``clock`` the time written into Redis (the same object but in
    tests that step the engines' time by hand)."""

    log = Logger()

    def __init__(
        self,
        host: RegistrationHost,
        *,
        instance: str,
        commands: Commands,
        status: Status,
        local: Local,
        outbox: Outbox,
        liveness: Liveness,
        inbox_stream: str,
        clock: Any,
        reactor: Any,
        startup_wait: float,
        register_batch: int,
        reap_batch: int,
    ) -> None:
        self.host = host
        self.instance = instance
        self.status = status
        self.commands = commands
        self.local = local
        self.outbox = outbox
        self.liveness = liveness
        self.inbox_stream = inbox_stream
        self.clock = clock
        self.reactor = reactor
        self.startup_wait = startup_wait
        self.register_batch = register_batch
        self.reap_batch = reap_batch
        self.counters = {"resyncs": 0, "restores": 0}
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

            call = self.reactor.callLater(timeout, expire)
            d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def stop_waiting(self) -> None:
        """Redis is known to be unreachable: whoever waits for it is answered at once."""
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(EngineUnavailable(self.status.reason))

    def _wait(self) -> bool:
        """Whether a caller should wait for the first registration: briefly after start(), as
        long as no connection attempt has failed (then the answer is "unavailable", at once)."""
        return (
            not self.registered
            and not self.status.stopping
            and self.status.started
            and self.status.refused is None
        )

    def _ready(self) -> None:
        """Registered (again): Redis may be used."""
        self.status.available = True
        self.status.reason = "ok"
        self.outbox.flush()  # what was relayed meanwhile, before anything else
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def require(self) -> defer.Deferred[None]:
        """Wait for the first registration after start() (briefly); afterwards fail fast."""
        if self.status.available:
            return defer.succeed(None)
        if self._wait():
            return self.when_ready(self.startup_wait)
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
        elif not self.status.stopping and (self.syncing is not None or self._wait()):
            d = self.when_ready(self.startup_wait).addCallback(lambda _: online())
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
        proto = self.commands.proto
        if proto is None:
            return
        await self.commands.load(proto)
        if not self.registered:
            await self.commands.raw("DEL", self.inbox_stream)
            await self.reap_self()  # whatever a previous process of this id left behind
            await self.register(restore=True)
            self.registered = True
        else:
            args = self.liveness.heartbeat_args(ms(self.reactor.seconds()))
            reply = await self.commands.evalsha("heartbeat", *args[:4], 0, args[5])
            standing = self.liveness.parse(reply).standing
            if standing == REAPED:
                await self._rejoin_after_reap()
            elif standing == LOST:
                self.log.warn("Redis lost its data: restoring this instance's state")
                self.counters["restores"] += 1
                await self.register(restore=True)
                self.outbox.replay_sent(self.local.rooms)
            elif self.status.dirty:
                await self.register(restore=False)
        if self.commands.proto is proto:
            self._ready()

    def _failed(self, failure: Failure, proto: Any) -> None:
        self.log.warn("redis sync failed: {f}", f=failure.getErrorMessage())
        # the cause when it is known (a TLS handshake that failed after the connection was made)
        cause = self.status.refused or failure.getErrorMessage()
        self.status.reason = f"redis unavailable: {cause}"
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
                self.host.end_locally(room_id)
        await self.register(restore=True)

    async def register(self, restore: bool) -> None:
        """Reconcile Redis with the local state (``register.lua``) under a new epoch, remove
        users Redis has of this instance that are gone, queue the waiting users again (with
        their original join time).  ``restore``: Redis lost its data (or holds nothing of this
        instance): local rooms are registered unless Redis contradicts them, rooms with users of
        other instances included.  Otherwise a local room is kept only where Redis agrees."""
        now = self.clock.seconds()
        self.counters["resyncs"] += 1
        self.status.dirty = False
        epoch = self.liveness.new_epoch()
        total_matches, conns = self.host.registered_totals()
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
            reply = await self.commands.evalsha(
                "register",
                self.instance,
                epoch,
                ms(self.liveness.lease_ttl),
                ms(now),
                uuid.uuid4().hex,
                1 if restore else 0,
                ms(self.liveness.provisional_ttl),
                msgpack.packb(
                    (
                        users[i : i + step],
                        total_matches if first else 0,
                        conns if first else {},
                        1 if first else 0,
                    )
                ),
            )
            generation, gone = msgpack.unpackb(reply, raw=False)
            if first:
                self.liveness.registered(epoch, generation)
            ended.extend(gone)
        for user_id in ended:
            lu = self.local.users.get(user_id)
            if lu is not None and lu.room is not None:
                self.host.end_locally(lu.room)
        await self._prune(now)
        queued = sorted(
            (
                (u, lu)
                for u, lu in self.local.users.items()
                if lu.prefs is not None and lu.room is None
            ),
            key=lambda x: x[1].joined_at,
        )
        ds = [self.host.rejoin(u, lu, now) for u, lu in queued]  # pipelined, in join order
        if ds:
            await defer.gatherResults(ds, consumeErrors=True)

    async def _prune(self, now: float) -> None:
        """Remove the users Redis holds for this instance that are not connected here any more
        (they left during an outage; or stand-ins another instance restored): partners told."""
        members = await self.commands.raw("SMEMBERS", f"instance:{self.instance}:users")
        stale = [text(m) for m in members or ()]
        stale = [u for u in stale if u not in self.local.users]
        ds = [
            self.commands.evalsha("disconnect", u, self.instance, ms(now)).addCallback(
                self.local.left, "disconnected"
            )
            for u in stale
        ]
        if ds:
            await defer.gatherResults(ds, consumeErrors=True)

    async def reap_self(self) -> None:
        """Remove this instance's users from Redis, a batch per script call."""
        while True:
            _, more = await self.commands.evalsha(
                "reap", self.instance, ms(self.clock.seconds()), self.reap_batch
            )
            if not more:
                return
