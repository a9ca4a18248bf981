"""Which instances of the redis engine are alive: a lease, a reaper with a suspicion step, fencing.

A live instance must never be declared dead because it was *busy* (a long reactor turn under a
burst, a GC pause, a ``SIGSTOP`` of a few seconds), and a dead one (``kill -9``, a lost host) must
be cleaned up within 5 s: its users leave the queues, their partners are told.  Nothing can tell a
process frozen for 5 s from a dead one, so the design separates the two by *time* only where it
must, and makes everything else independent of the reactor's load:

* **Lease, renewed by a thread.**  ``instance:{id}`` (value: the instance's *epoch*) lives
  ``lease_ttl`` (2.5 s) and is renewed every ``renew_interval`` (0.25 s) by :class:`LeaseKeeper`,
  a daemon thread with its own blocking Redis socket (txredisapi is reactor-bound, so the thread
  speaks RESP itself: one ``EVAL`` of ``LEASE_SCRIPT`` per renewal).  A reactor turn that lasts
  seconds therefore does not delay the lease: a busy instance stays alive.  The reactor's own
  heartbeat (every ``interval``, 0.25 s) renews it too, so a dead thread is no outage.
* **Hung is dead.**  The thread renews only while the reactor shows progress (its heartbeat ran in
  the last ``hang_limit``, 15 s): a reactor stuck for good (an endless loop) lets its lease lapse
  and its users are freed, instead of being held by a thread that pretends all is well.
* **Suspicion before reaping.**  The reaper (every instance's reactor heartbeat runs it, in
  ``heartbeat.lua``) *suspects* a registered instance whose lease is gone, noting the time
  (Redis ``TIME``, one clock for every reaper) in ``instances:suspect``; it reaps it only when the
  lease is still gone ``grace`` (1.5 s) later.  A suspect that renews in time is cleared and keeps
  everything (nothing was touched).  Matching already skips users of an instance whose lease is
  gone, so nobody is matched with a ghost meanwhile.  Budget: a frozen process survives a stall
  of up to ``lease_ttl + grace - renew_interval`` = 3.75 s; a killed one is reaped
  ``lease_ttl + grace`` (+ one reaper period) = 4.0-4.25 s after its last renewal.
* **Fencing by epoch.**  Each registration draws a new epoch, stored in ``instances:epoch``; the
  lease is renewed only while that hash still holds *this* epoch, and reaping deletes it first
  (before the first batch of users goes).  An instance that comes back after it was reaped can
  therefore never quietly resume: its renewal is refused, it learns it was fenced
  (:data:`REAPED`) and registers again under a new epoch (its chats with other instances ended:
  their partners were told by the reaper).
* **Redis generations.**  The first registration after Redis lost its data (restart without
  persistence) writes a new ``generation``.  An instance whose lease is refused while the
  generation differs from the one it registered under knows that nobody reaped it — Redis
  forgot everything (:data:`LOST`) — and restores its whole state, chats across instances
  included (see :mod:`anygle.engine.redis.registration`).

Why not only a longer TTL: the numbers are the same (3.75 s survived, ~4 s to detect), but a
suspect is visible (``instances:suspect``, :meth:`Liveness.report`), and the epoch makes "was I
reaped?" a question Redis answers exactly instead of a guess from a missing key.  Why not only a
thread: ``SIGSTOP`` freezes every thread, so the 3 s stall must fit in the TTL anyway, and a
thread alone would keep a hung reactor alive forever.

Public surface: :class:`Liveness` (what the engine and the tests use), :class:`LeaseKeeper`, the
standings :data:`ALIVE` / :data:`REAPED` / :data:`LOST`.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from anygle.engine.base import EngineUnavailable
from anygle.engine.redis.blocking import BlockingConnection, RespError
from anygle.engine.redis.client import RedisAddress

__all__ = ["ALIVE", "LOST", "REAPED", "Beat", "LeaseKeeper", "Liveness", "LivenessHost"]

ALIVE = "alive"  # the lease is ours
REAPED = "reaped"  # fenced: another instance reaped this one (Redis kept its data)
LOST = "lost"  # Redis lost its data (a new generation, or none yet)

# Renew instance:{id} only while instances:epoch still names this epoch.  ARGV: id, epoch, ttl ms
LEASE_SCRIPT = """
if redis.call('HGET', 'instances:epoch', ARGV[1]) == ARGV[2] then
    redis.call('SET', 'instance:' .. ARGV[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""


def _ms(seconds: float) -> int:
    return round(seconds * 1000.0)


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat's answer."""

    standing: str  # ALIVE, REAPED or LOST
    reaped: int  # users of dead instances removed by this call
    total_matches: int
    more: bool  # reaping budget exhausted: call again
    suspected: int  # instances newly suspected by this call


class LivenessHost(Protocol):
    """What :class:`Liveness` needs from the engine (:class:`~anygle.engine.redis.RedisEngine`)."""

    def liveness_script(self, name: str, *args: Any) -> defer.Deferred[Any]:
        """Run a script (``heartbeat``) when Redis is usable; fail with EngineUnavailable."""

    def liveness_usable(self) -> bool:
        """Registered and not synchronising: the heartbeat may run."""

    def liveness_housekeeping(self) -> None:
        """Per-beat chores of the engine (purges, stalled-connection checks, TTL touches)."""

    def liveness_beaten(self, beat: Beat) -> None:
        """A heartbeat answered (``total_matches``, for the stats)."""

    def liveness_lost(self, standing: str) -> None:
        """The lease was refused (``REAPED`` or ``LOST``): register again."""


# --- the thread ------------------------------------------------------------------------------
class LeaseKeeper(threading.Thread):
    """Renews the lease from its own thread and socket, independently of the reactor's turns.

    ``epoch`` (set by the reactor after each registration; ``None`` stops renewing) is read
    without a lock: one attribute read.  A refused renewal is reported once per epoch through
    ``reactor.callFromThread(on_refused, epoch)``.
    """

    def __init__(
        self,
        address: RedisAddress,
        instance: str,
        reactor: Any,
        *,
        ttl: float,
        interval: float,
        hang_limit: float,
        progress: Callable[[], float],
        on_refused: Callable[[str], None],
        on_renewed: Callable[[], None],
    ) -> None:
        super().__init__(name=f"anygle-lease-{instance}", daemon=True)
        self.address = address
        self.instance = instance
        self.reactor = reactor
        self.ttl = ttl
        self.interval = interval
        self.hang_limit = hang_limit
        self.progress = progress
        self.on_refused = on_refused
        self.on_renewed = on_renewed
        self.epoch: str | None = None
        self.hung = False  # the reactor made no progress for hang_limit: renewing stopped
        self._refused: str | None = None
        self._halt = threading.Event()
        # its own socket (TLS for rediss://), short timeouts: a renewal must not wait long
        self._redis = BlockingConnection(address, timeout=max(0.2, min(1.0, ttl / 3)))

    def halt(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            try:
                self.renew_once()
            except Exception:  # never die: the reactor's heartbeat would be the only renewal
                self._close()
        self._close()

    def renew_once(self) -> bool | None:
        """One renewal; ``None`` when skipped or Redis could not be reached."""
        epoch = self.epoch
        if epoch is None or epoch == self._refused:
            return None
        self.hung = time.monotonic() - self.progress() > self.hang_limit
        if self.hung:
            return None  # a hung reactor is a dead instance: let the lease lapse
        try:
            ok: bool = self._call("EVAL", LEASE_SCRIPT, 0, self.instance, epoch, _ms(self.ttl)) == 1
        except (OSError, ConnectionError, RespError, ValueError):
            self._close()
            return None
        if ok:
            self.on_renewed()
        elif epoch == self.epoch:
            self._refused = epoch
            self.reactor.callFromThread(self.on_refused, epoch)
        return ok

    def _call(self, *args: Any) -> Any:
        return self._redis.call(*args)

    def _close(self) -> None:
        self._redis.close()


# --- the reactor side ------------------------------------------------------------------------
class Liveness:
    """The lease, the reaper and the standing of one instance (see the module docstring)."""

    log = Logger()

    interval: float = 0.25  # reactor heartbeat: reaper, reactor-side renewal, housekeeping
    lease_ttl: float = 2.5
    grace: float = 1.5  # a suspect is reaped when its lease is still gone this much later
    renew_interval: float = 0.25  # the thread's renewals
    hang_limit: float = 15.0
    provisional_ttl: float = 10.0  # lease given by a restoring instance to a partner's instance
    reap_batch: int = 500  # users per reaping script call

    def __init__(self, host: LivenessHost, instance: str, address: RedisAddress, reactor: Any):
        self.host = host
        self.instance = instance
        self.address = address
        self.reactor = reactor
        self.epoch: str | None = None
        self.generation: str | None = None  # Redis generation of the last registration
        self.counters = {"reaped": 0, "suspected": 0, "refused": 0, "renewals": 0}
        self._call: Any = None
        self._running = False
        self._progress = time.monotonic()
        self.beat_gap = 0.0  # time between the last two reactor heartbeats (interval + lateness)
        self._max_lateness = 0.0
        self._renewed = 0.0  # monotonic time of the last successful renewal
        self._max_gap = 0.0  # longest time between two renewals since the last report()
        self._keeper: LeaseKeeper | None = None

    # lifecycle
    def start(self) -> None:
        self._running = True
        self._progress = time.monotonic()
        self._call = self.reactor.callLater(self.interval, self._beat)
        self._keeper = LeaseKeeper(
            self.address,
            self.instance,
            self.reactor,
            ttl=self.lease_ttl,
            interval=self.renew_interval,
            hang_limit=self.hang_limit,
            progress=lambda: self._progress,
            on_refused=self._refused,
            on_renewed=self._note_renewed,
        )
        self._keeper.epoch = self.epoch
        self._keeper.start()

    def stop(self) -> None:
        """No more renewals nor reaping (clean stop; or, without deregistering, a crash)."""
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._keeper is not None:
            self._keeper.epoch = None
            self._keeper.halt()
            self._keeper = None

    def new_epoch(self) -> str:
        return uuid.uuid4().hex[:16]

    def registered(self, epoch: str, generation: str) -> None:
        """The engine registered under ``epoch`` in Redis ``generation``: renew from now on."""
        self.epoch, self.generation = epoch, generation
        self._note_renewed()
        if self._keeper is not None:
            self._keeper.epoch = epoch

    def heartbeat_args(self, now_ms: int) -> tuple[Any, ...]:
        return (
            self.instance,
            self.epoch or "",
            _ms(self.lease_ttl),
            now_ms,
            self.reap_batch,
            _ms(self.grace),
        )

    def standing(self, alive: int, generation: bytes | str | None) -> str:
        if alive:
            return ALIVE
        gen = generation.decode() if isinstance(generation, bytes) else generation
        if gen and gen == self.generation:
            return REAPED
        return LOST

    def parse(self, reply: list[Any]) -> Beat:
        alive, reaped, total, more, generation, suspected = reply
        return Beat(self.standing(alive, generation), reaped, int(total), bool(more), suspected)

    def report(self) -> dict[str, Any]:
        """For ``/health`` and metrics: seconds since the last renewal, the longest gap between
        renewals and the reactor heartbeat's worst lateness since the previous report, whether
        the reactor looks hung, counters."""
        now = time.monotonic()
        gap, self._max_gap = self._max_gap, 0.0
        late, self._max_lateness = self._max_lateness, 0.0
        since = now - self._renewed if self._renewed else None
        return {
            "lease_age": since,
            "max_renewal_gap": max(gap, since or 0.0),
            "max_heartbeat_lateness": max(0.0, late),
            "lease_ttl": self.lease_ttl,
            "grace": self.grace,
            "hung": bool(self._keeper and self._keeper.hung),
            **self.counters,
        }

    # internals
    def _note_renewed(self) -> None:
        now = time.monotonic()
        if self._renewed:
            self._max_gap = max(self._max_gap, now - self._renewed)
        self._renewed = now
        self.counters["renewals"] += 1

    def _refused(self, epoch: str) -> None:
        if not self._running or epoch != self.epoch:
            return
        self.counters["refused"] += 1
        self.log.warn(
            "lease of {i} refused (epoch {e}): registering again", i=self.instance, e=epoch
        )
        self.host.liveness_lost(REAPED)  # the engine finds out which (REAPED or LOST)

    def _beat(self) -> None:
        if not self._running:
            return
        self._call = self.reactor.callLater(self.interval, self._beat)
        now = time.monotonic()
        self.beat_gap, self._progress = now - self._progress, now
        self._max_lateness = max(self._max_lateness, self.beat_gap - self.interval)
        try:
            self.host.liveness_housekeeping()
            if not self.host.liveness_usable():
                return
            self._heartbeat()
        except Exception:
            self.log.failure("heartbeat failed")

    def _heartbeat(self) -> None:
        now_ms = _ms(self.reactor.seconds())
        d = self.host.liveness_script("heartbeat", *self.heartbeat_args(now_ms))
        d.addCallback(self._beaten)
        d.addErrback(self._failed)

    def _beaten(self, reply: list[Any]) -> Beat:
        beat = self.parse(reply)
        self.host.liveness_beaten(beat)
        if beat.standing == ALIVE:
            self._note_renewed()
        if beat.suspected:
            self.counters["suspected"] += beat.suspected
            self.log.info("{n} instance(s) missed their lease: suspected", n=beat.suspected)
        if beat.reaped:
            self.counters["reaped"] += beat.reaped
            self.log.info("reaped {n} users of dead instances", n=beat.reaped)
        if beat.more and self._running and self.host.liveness_usable():
            self._heartbeat()  # a big dead instance: go on reaping at once
        if beat.standing != ALIVE and self._running and self.host.liveness_usable():
            self.log.warn(
                "instance {i} lost its lease ({s}): registering again",
                i=self.instance,
                s=beat.standing,
            )
            self.host.liveness_lost(beat.standing)
        return beat

    def _failed(self, failure: Failure) -> None:
        if failure.check(EngineUnavailable):
            return
        self.log.failure("heartbeat failed", failure)
