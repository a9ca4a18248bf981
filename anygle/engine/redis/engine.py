"""The redis engine's API (:class:`RedisEngine`): sessions, queues, rooms and relays, and the
lifecycle of its connections; the parts it is made of are listed in :mod:`anygle.engine.redis`.

* **Order.**  Every command (relays and scripts alike) goes over one pipelined connection, and the
  relay batch is flushed before any script runs, so a partner never sees ``partner_left`` before
  the last messages, nor a message before ``matched`` (early events for a room not known yet are
  held back until its ``matched``: :mod:`.local`).
* **Local first.**  Partners on the same instance relay with a direct call and no Redis at all,
  so their chats go on through a Redis outage.
* **Outage.**  While Redis is unreachable, calls fail at once with :class:`EngineUnavailable`
  (``SERVICE_UNAVAILABLE`` for the client), ``health()`` says why, local chats go on, and the
  connections come back with a short backoff (0.1 s doubling to 2 s).  A local change made
  meanwhile (a disconnect, a skip) is applied here at once and marks the instance *dirty*: it
  reconciles with Redis when it is back (:mod:`.registration`); relays to other instances are
  kept (:mod:`.delivery`).
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import msgpack
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTCP, IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from anygle.engine.base import EngineConfig, EngineSink, EngineUnavailable, IpNames
from anygle.engine.redis.client import RedisAddress, RedisFactory, endpoint
from anygle.engine.redis.delivery import Inbox, Outbox
from anygle.engine.redis.handover import Handover
from anygle.engine.redis.liveness import Beat, Liveness
from anygle.engine.redis.local import Local, LocalRoom, LocalUser
from anygle.engine.redis.records import Records
from anygle.engine.redis.registration import Registration
from anygle.engine.redis.scripts import QUEUES, Commands, Status, ms
from anygle.model import Match, Preferences, Stats
from anygle.reports import Report, ReportOutcome

__all__ = ["EngineUnavailable", "RedisEngine"]


class RedisEngine:
    """See the module docstring; docs/operations.md lists the keys."""

    name: ClassVar[str] = "redis"
    log = Logger()

    touch_interval: ClassVar[float] = 60.0
    reply_timeout: ClassVar[float] = 3.0
    startup_wait: ClassVar[float] = 5.0
    reap_batch: ClassVar[int] = 500  # users per reaping script call
    register_batch: ClassVar[int] = 1000  # users per registration script call

    def __init__(self, config: EngineConfig, clock: IReactorTime, reactor: Any = None) -> None:
        """``clock`` (the reactor, as for the memory engine) gives the time of the shared state
        (join times, cooldowns, rates) and, unless ``reactor`` is given, everything else too:
        timers, connections, the lease thread.  Tests that step the engines' time by hand pass
        a :class:`~twisted.internet.task.Clock` as ``clock`` and the reactor as ``reactor``."""
        self.config = config
        self.clock = clock
        self.reactor: Any = clock if reactor is None else reactor
        if not (IReactorTCP.providedBy(self.reactor) and IReactorThreads.providedBy(self.reactor)):
            raise TypeError(
                f"the redis engine needs a reactor for its connections and its lease thread, "
                f"not {self.reactor!r}: pass reactor= beside a test clock"
            )
        self.instance = config.instance_id
        if not self.instance or ":" in self.instance or self.instance != self.instance.strip():
            # instance:{id}, instance:{id}:users … must not collide
            raise ValueError(f"bad instance id {self.instance!r}: non-empty, no ':' or spaces")
        self.address = (
            RedisAddress.parse(config.redis_url)
            .with_tls_files(*config.redis_tls)
            .with_sentinels(config.redis_sentinels, config.redis_master)
        )
        self.primary: RedisAddress | None = None  # with sentinels: the one they named last
        self.failovers: list[tuple[float, str, str]] = []  # (when, from, to) seen, newest last
        self.relays = {"relayed_remote": 0, "relayed_local": 0}
        self.status = Status()
        self.commands = Commands(self.status, before_script=lambda: self.outbox.flush())
        self.local = Local(self.instance, self.reactor)
        self.outbox = Outbox(self.commands, self.reactor, self.local.undelivered)
        self.handover = Handover(
            self.instance,
            self.commands,
            self.local,
            self.outbox,
            self.clock,
            self.reactor,
            self.disconnect,
        )
        self.inbox = Inbox(f"inbox:{self.instance}", self.reactor, self._dispatch, self.status)
        self.liveness = Liveness(self, self.instance, self.address, self.reactor)
        self.registration = Registration(
            self,
            instance=self.instance,
            commands=self.commands,
            status=self.status,
            local=self.local,
            outbox=self.outbox,
            liveness=self.liveness,
            inbox_stream=self.inbox.stream,
            clock=self.clock,
            reactor=self.reactor,
            startup_wait=self.startup_wait,
            register_batch=self.register_batch,
            reap_batch=self.reap_batch,
        )
        self.records = Records(
            instance=self.instance,
            config=config,
            commands=self.commands,
            status=self.status,
            registration=self.registration,
            users=self.local.users,
            clock=self.clock,
            reactor=self.reactor,
        )
        self._cmd_factory: RedisFactory | None = None
        self._reader_factory: RedisFactory | None = None
        self._next_touch = 0.0
        self._complained: tuple[str, float] | None = None  # (cause, when) of the last warning

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, sink: EngineSink) -> defer.Deferred[None]:
        self.local.sink = sink
        self.status.started, self.status.stopping = True, False
        self._cmd_factory = RedisFactory(
            self.address, self._cmd_ready, self._cmd_lost, self._given_up, self._connect_failed
        )
        self._reader_factory = RedisFactory(
            self.address,
            self.inbox.connected,
            self.inbox.lost,
            self._given_up,
            self._connect_failed,
        )
        for factory in (self._cmd_factory, self._reader_factory):
            factory.startConnecting(
                endpoint(self.reactor, self.address, self._connect_failed, self._primary_named)
            )
        self.liveness.start()
        return self.when_ready(self.startup_wait).addErrback(self._start_failed)

    def _start_failed(self, failure: Failure) -> None:
        failure.trap(EngineUnavailable)
        if self._complained is None:  # not said yet (no attempt failed: none answered in time)
            why = self.status.reason
            self.log.warn("redis engine started without Redis ({why}); retrying", why=why)

    def when_ready(self, timeout: float | None = None) -> defer.Deferred[None]:
        """Fires when the engine is usable; fails with EngineUnavailable after ``timeout``."""
        return self.registration.when_ready(timeout)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Clean stop: this instance's users leave at once (remote partners told)."""
        self.status.stopping = True
        self.liveness.stop()
        if self.status.available:
            try:
                self.outbox.flush()  # the last relays before their partners hear of the end
                yield defer.ensureDeferred(self.registration.reap_self())
            except Exception as e:
                self.log.warn("could not deregister cleanly: {e}", e=e)
        self.status.available = False
        self.status.reason = "redis unavailable: engine stopped"
        self.local.clear()
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
        self.status.stopping = True
        self.status.available = False
        self.status.reason = "redis unavailable: engine halted"
        self.liveness.stop()
        for factory in (self._cmd_factory, self._reader_factory):
            if factory is not None:
                factory.stopTrying()
        self.drop_connections()

    def drop_connections(self) -> None:
        """Cut both Redis connections as a network blip would; they reconnect by themselves
        and the engine synchronises again.  For tests of reconnection (:meth:`halt` is a
        crash, :meth:`stop` a clean stop)."""
        for proto in (self.commands.proto, self.inbox.proto):
            if proto is not None and proto.transport is not None:
                proto.transport.abortConnection()

    def health(self) -> tuple[bool, str]:
        if not self.status.available:
            return False, self.status.reason
        if self.inbox.proto is None:
            return False, "redis unavailable: inbox connection down"
        return True, "ok"

    # --- the connections ------------------------------------------------------------------
    complain_every: ClassVar[float] = 60.0  # the same connection problem is logged this often

    def _primary_named(self, primary: RedisAddress) -> None:
        """The sentinels named the primary for a connection attempt: a new one is a failover."""
        if self.primary is not None and str(primary) != str(self.primary):
            self.failovers.append((self.reactor.seconds(), str(self.primary), str(primary)))
            del self.failovers[:-10]
            self.log.warn("redis primary is now {new} (was {old})", new=primary, old=self.primary)
        self.primary = primary

    def _connect_failed(self, why: str) -> None:
        """An attempt to connect failed: ``/health`` says why, callers stop waiting."""
        self._cannot_use(f"cannot connect to {self.address}: {why}", retrying=True)

    def _given_up(self, why: str) -> None:
        """txredisapi gave up on a connection (AUTH or SELECT refused): it will not retry."""
        self._cannot_use(f"{why} (at {self.address}; not retrying: fix it and restart)")

    def _cannot_use(self, cause: str, retrying: bool = False) -> None:
        if self.status.stopping:
            return
        self.status.refused = cause
        now = self.reactor.seconds()
        last = self._complained
        if last is None or last[0] != cause or now - last[1] >= self.complain_every:
            self._complained = (cause, now)
            self.log.warn(
                "redis unavailable: {cause}{more}", cause=cause, more="; retrying" * retrying
            )
        if not self.status.available:
            self.status.reason = f"redis unavailable: {cause}"
            self.registration.stop_waiting()

    def _cmd_ready(self, proto: Any) -> None:
        if self.status.stopping:
            return
        if self._complained is not None:
            self.log.info("connected to redis at {address}", address=str(self.address))
            self._complained = None
        self.status.refused = None
        self.commands.proto = proto
        self.status.reason = "redis unavailable: synchronising"
        self.registration.sync()

    def _cmd_lost(self, proto: Any) -> None:
        if self.commands.proto is proto:
            self.commands.proto = None
            was = self.status.available
            self.status.available = False
            self.status.reason = f"redis unavailable: lost connection to {self.address}"
            if was and not self.status.stopping:
                self.log.warn("{reason}", reason=self.status.reason)
            self.outbox.requeue_inflight()

    # --- liveness (anygle.engine.redis.liveness calls these), TTLs ------------------------------
    def liveness_script(self, name: str, *args: Any) -> defer.Deferred[Any]:
        return self.commands.script(name, *args)

    def liveness_usable(self) -> bool:
        return (
            self.status.available and self.registration.syncing is None and not self.status.stopping
        )

    def liveness_housekeeping(self) -> None:
        now = self.reactor.seconds()
        self.outbox.purge(now)
        self.local.purge(now)
        if self.liveness.beat_gap > 1.0:
            # This process itself was frozen or busy: replies may be waiting unread in the
            # sockets, so silence proves nothing about Redis yet (checked again next beat).
            return
        for proto, limit in ((self.commands.proto, self.reply_timeout), (self.inbox.proto, 5.0)):
            if proto is not None and proto.stalled(limit) and proto.transport is not None:
                self.log.warn("redis connection stalled: reconnecting")
                proto.transport.abortConnection()
        if self.liveness_usable() and self.reactor.seconds() >= self._next_touch:
            self._next_touch = self.reactor.seconds() + self.touch_interval
            self._touch().addErrback(self._log_failure, "touch")

    def registered_totals(self) -> tuple[int, dict[str, int]]:
        return self.records.total_matches, self.records.conns

    def liveness_beaten(self, beat: Beat) -> None:
        self.records.total_matches = max(self.records.total_matches, beat.total_matches)

    def liveness_lost(self, standing: str) -> None:
        """The lease was refused: stop using Redis until registered again (the sync finds out
        whether this instance was reaped or Redis lost its data)."""
        if self.status.stopping:
            return
        if self.status.available:
            self.status.available = False
            self.status.reason = "redis unavailable: registering again"
        if self.commands.proto is not None:
            self.registration.sync()

    def _touch(self) -> defer.Deferred[Any]:
        now = ms(self.clock.seconds())
        ds = [self.commands.script("touch", p) for p in self.local.touch_payloads(now)]
        return defer.gatherResults(ds, consumeErrors=True)

    def _log_failure(self, failure: Failure, what: str) -> None:
        if failure.check(EngineUnavailable):
            return
        self.log.failure("{what} failed", failure, what=what)

    # --- relays ---------------------------------------------------------------------------
    def relay(self, partner_id: str, room_id: str, frame: dict[str, Any]) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        room.active = True
        instance = room.instances.get(partner_id)
        if instance is None:
            return
        if instance != self.instance and self.outbox.full():
            self.local.undelivered(partner_id, room_id, frame)
            return
        # Numbered whichever way it goes: a partner that just moved here gets this sender's
        # earlier relays forwarded by its old instance, and ``Local.deliver`` puts a later one
        # that overtakes them back in order.
        sender = self.users.get(room.match.partner_of(partner_id))
        seq = 0
        if sender is not None:
            sender.sent += 1
            seq = sender.sent
        if instance == self.instance:
            local = self.users.get(partner_id)
            if local is not None and local.room == room_id:
                self.relays["relayed_local"] += 1
                self.local.deliver(partner_id, room_id, frame, seq)
            return
        self.relays["relayed_remote"] += 1
        self.outbox.add(instance, ("r", partner_id, room_id, frame, seq))

    def end_locally(self, room_id: str) -> None:
        """End a room here only (Redis has it ended, or never will have it): its local users are
        told ``partner_disconnected``, relays still waiting for it are dropped."""
        if self.local.end_room(room_id):
            self.outbox.drop_room(room_id)

    def _dispatch(self, event: list[Any]) -> None:
        """An inbox event: a move's (``h``, ``H``, ``v``), else the local state's."""
        if not self.handover.dispatch(event):
            self.local.dispatch(event)

    # --- sessions -------------------------------------------------------------------------
    def connect(self, user_id: str, ip: str, resume_key: str = "") -> defer.Deferred[None]:
        local = LocalUser(ip, uuid.uuid4().hex, resume_key=resume_key)
        self.users[user_id] = local

        def online() -> defer.Deferred[None]:
            if self.users.get(user_id) is not local:
                return defer.succeed(None)  # gone again meanwhile
            now = ms(self.clock.seconds())
            d = self.commands.script(
                "connect", user_id, self.instance, ip, local.socket_id, now, resume_key
            )
            return d.addCallback(lambda _: None)

        # offline: nothing more to do here, the user is registered on reconnect
        return self.registration.online_or_not(online, lambda: None)

    def disconnect(self, user_id: str) -> defer.Deferred[None]:
        local = self.users.pop(user_id, None)
        taken = self.local.take_room(local)

        def online() -> defer.Deferred[None]:
            now = ms(self.clock.seconds())
            d = self.commands.script("disconnect", user_id, self.instance, now)
            return d.addCallback(self.local.left, "disconnected").addCallback(lambda _: None)

        def offline() -> None:
            self._offline_partner_left(user_id, taken, "disconnected")

        return self.registration.online_or_not(online, offline)

    def rekey(self, user_id: str, resume_key: str) -> defer.Deferred[None]:
        local = self.users.get(user_id)
        if local is None:
            return defer.succeed(None)
        local.resume_key = resume_key

        def online() -> defer.Deferred[None]:
            d = self.commands.script("rekey", user_id, self.instance, resume_key)
            return d.addCallback(lambda _: None)

        return self.registration.online_or_not(online, lambda: None)

    def claim(self, resume_key: str, new_key: str) -> defer.Deferred[dict[str, Any] | None]:
        return self.registration.require().addCallback(
            lambda _: self.handover.claim(resume_key, new_key)
        )

    def _offline_partner_left(
        self, user_id: str, taken: tuple[str, LocalRoom | None] | None, reason: str
    ) -> str | None:
        """Redis is unreachable: end the room here only (a local partner is told); Redis is put
        right on reconnect (dirty), which tells a partner on another instance."""
        self.status.dirty = True
        if taken is None:
            return None
        room_id, room = taken
        if room is None:
            return None
        partner = room.match.partner_of(user_id)
        if room.instances.get(partner) == self.instance:
            self.local.partner_left(partner, room_id, reason)
        return partner

    # --- queues ---------------------------------------------------------------------------
    def rejoin(self, user_id: str, user: LocalUser, now: float) -> defer.Deferred[Any]:
        """Queue ``user`` again after a registration (:class:`Registration` calls this)."""

        def result(reply: bytes) -> None:
            try:
                self._join_result(user_id, reply, now)
            except EngineUnavailable:
                pass

        return self.commands.evalsha("join", *self._join_args(user_id, user, now)).addCallback(
            result
        )

    def _join_args(self, user_id: str, local: LocalUser, now: float) -> tuple[Any, ...]:
        prefs = local.prefs
        assert prefs is not None
        return (
            user_id,
            self.instance,
            prefs.queue,
            msgpack.packb(list(prefs.interests)),
            1 if prefs.interests_only else 0,
            ms(local.joined_at),
            ms(now),
            ms(self.config.interest_timeout),
            uuid.uuid4().hex,
            self.config.match_history,
        )

    def join(self, user_id: str, prefs: Preferences, now: float) -> defer.Deferred[Match | None]:
        local = self.users.get(user_id)
        if local is not None and local.room is not None:
            # The hub, which decides, has this user out of any room: the room here is stale (a
            # match heard after its room had ended).  Detached, the user is queued as asked;
            # should Redis still have it in that room, the script answers 'inroom'.
            self.log.warn(
                "{user} joins while still in {room} here: detached", user=user_id, room=local.room
            )
            self.local.take_room(local)

        def go(_: Any) -> defer.Deferred[Match | None]:
            lu = self.users.get(user_id)
            if lu is None:
                raise RuntimeError(f"join before connect: {user_id}")
            lu.prefs, lu.joined_at = prefs, now
            d = self.commands.script("join", *self._join_args(user_id, lu, now))
            d.addCallback(lambda reply: self._join_result(user_id, reply, now))
            d.addErrback(self._join_failed, user_id)
            return d

        return self.registration.require().addCallback(go)

    def _join_failed(self, failure: Failure, user_id: str) -> Failure:
        local = self.users.get(user_id)
        if local is not None and failure.check(EngineUnavailable):
            local.prefs = None
        return failure

    def _join_result(self, user_id: str, reply: bytes, now: float) -> Match | None:
        result = msgpack.unpackb(reply, raw=False)
        kind = result[0]
        if kind == "match":
            return self.local.apply_match(result[1], now)
        if kind == "banned":
            local = self.users.get(user_id)
            if local is not None:
                local.prefs = None
            self.local.started_sink().on_kick(user_id, "BANNED", f"banned: {result[1]}")
            return None
        if kind == "nouser":
            # reaped while alive (a long stall): register again, the client retries
            local = self.users.get(user_id)
            if local is not None:
                local.prefs = None
            self.status.dirty = True
            if self.status.available:
                self.status.available = False
                self.status.reason = "redis unavailable: resynchronising"
                self.registration.sync()
            raise EngineUnavailable("this instance was reaped: resynchronising")
        return None  # 'queued', or 'inroom': matched meanwhile, matched event on its way

    def tick(self, now: float) -> defer.Deferred[int]:
        if not self.status.available:
            return defer.succeed(0)
        d = self.commands.script(
            "tick",
            self.instance,
            ms(now),
            ms(self.config.interest_timeout),
            uuid.uuid4().hex[:24],
            self.config.match_history,
            *QUEUES,
        )

        def made(reply: bytes | None) -> int:
            if not reply:
                return 0
            matches = msgpack.unpackb(reply, raw=False)
            for m in matches:
                self.local.apply_match(m, now)
            return len(matches)

        def failed(f: Failure) -> int:
            f.trap(EngineUnavailable)
            return 0

        return d.addCallbacks(made, failed)

    def queue_status(self, user_ids: list[str]) -> defer.Deferred[dict[str, tuple[int, float]]]:
        if not user_ids:
            return defer.succeed({})
        d = self.commands.script("queue_status", *user_ids)

        def done(reply: bytes) -> dict[str, tuple[int, float]]:
            return {
                u: (int(pos), round(float(est), 1))
                for u, pos, est in msgpack.unpackb(reply, raw=False)
            }

        return d.addCallback(done)

    # --- rooms ----------------------------------------------------------------------------
    def leave_room(self, user_id: str, reason: str) -> defer.Deferred[str | None]:
        taken = self.local.take_room(self.users.get(user_id))

        def online() -> defer.Deferred[str | None]:
            d = self.commands.script(
                "leave_room",
                user_id,
                self.instance,
                reason,
                ms(self.clock.seconds()),
                ms(self.config.rematch_cooldown),
            )
            return d.addCallback(self.local.left, reason)

        return self.registration.online_or_not(
            online, lambda: self._offline_partner_left(user_id, taken, reason)
        )

    # --- stats, reports, counters, bans, limits (anygle.engine.redis.records) ----------------
    def stats(self) -> defer.Deferred[Stats]:
        return self.records.stats()

    def record_moderation(self, tier: str, category: str, outcome: str) -> None:
        self.records.record_moderation(tier, category, outcome)

    def report(self, report: Report) -> defer.Deferred[ReportOutcome]:
        return self.records.report(report)

    def reports(self, limit: int) -> defer.Deferred[list[dict[str, Any]]]:
        return self.records.reports(limit)

    def get_report(self, report_id: str) -> defer.Deferred[dict[str, Any] | None]:
        return self.records.get_report(report_id)

    def incr(self, key: str, ttl: float) -> defer.Deferred[int]:
        return self.records.incr(key, ttl)

    def get_count(self, key: str) -> defer.Deferred[int]:
        return self.records.get_count(key)

    def get_ban(self, user_id: str | None, ips: IpNames = None) -> defer.Deferred[str | None]:
        return self.records.get_ban(user_id, ips)

    def ban(self, kind: str, value: str, reason: str, ttl: float | None) -> defer.Deferred[None]:
        return self.records.ban(kind, value, reason, ttl)

    def unban(self, kind: str, value: str) -> defer.Deferred[bool]:
        return self.records.unban(kind, value)

    def check_bans(self, users: dict[str, IpNames]) -> defer.Deferred[dict[str, str]]:
        return self.records.check_bans(users)

    def rate(self, key: str, limit: int, window: float) -> defer.Deferred[bool]:
        return self.records.rate(key, limit, window)

    def acquire_connection(self, key: str, limit: int) -> defer.Deferred[bool]:
        return self.records.acquire_connection(key, limit)

    def release_connection(self, key: str) -> defer.Deferred[None]:
        return self.records.release_connection(key)

    # --- the local state (tests and the console read it) -----------------------------------
    @property
    def counters(self) -> dict[str, int]:
        """What happened to relays, events and registrations (a copy, from the parts)."""
        return {
            **self.relays,
            **self.local.counters,
            **self.registration.counters,
            **self.handover.counters,
        }

    @property
    def sink(self) -> EngineSink | None:
        return self.local.sink

    @property
    def users(self) -> dict[str, LocalUser]:
        return self.local.users

    @property
    def rooms(self) -> dict[str, LocalRoom]:
        return self.local.rooms
