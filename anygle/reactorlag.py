"""How late the reactor runs timers: a timer every 100 ms records how late it fired.

A reactor turn that lasts long (a burst of frames, a large push) delays every timer: the matcher
tick, the Redis heartbeat, the periodic pushes.  This measures exactly that delay, from inside the
process: the timer is due at ``t``, fires at ``t + lag``; ``lag`` goes into a histogram (for
``/metrics``) and a short window (the recent maximum, for ``/health``).  A timer that is overdue
right now counts as well, so a stall shows up while it is still going on.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

# seconds; the +Inf bucket is implied
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ReactorLag(Service):
    """A timer every ``interval`` seconds; ``recent_max()`` is the worst lateness over the last
    ``window`` seconds, ``buckets``/``count``/``total`` a cumulative histogram since start."""

    def __init__(self, clock: IReactorTime, interval: float = 0.1, window: float = 10.0) -> None:
        self.setName("reactor-lag")
        self.clock = clock
        self.interval = interval
        self.window = window
        self.counts = [0] * (len(BUCKETS) + 1)  # per bucket (not cumulative); last is +Inf
        self.count = 0
        self.total = 0.0
        self.max = 0.0  # since start
        self._recent: deque[tuple[float, float]] = deque()  # (when, lag), newest last
        self._due = 0.0
        self._call: IDelayedCall | None = None

    # --- service ---------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._schedule(self.clock.seconds())

    def stopService(self) -> Any:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self, now: float) -> None:
        self._due = now + self.interval
        self._call = self.clock.callLater(self.interval, self._fire)

    def _fire(self) -> None:
        now = self.clock.seconds()
        self.observe(max(0.0, now - self._due), now)
        self._schedule(now)

    # --- data ------------------------------------------------------------------------------
    def observe(self, lag: float, now: float) -> None:
        self.counts[bisect_left(BUCKETS, lag)] += 1  # the first bucket with lag <= bound
        self.count += 1
        self.total += lag
        self.max = max(self.max, lag)
        recent = self._recent
        recent.append((now, lag))
        while recent and recent[0][0] < now - self.window:
            recent.popleft()

    def overdue(self) -> float:
        """How late the pending timer already is (0 when it is not due yet)."""
        if self._call is None:
            return 0.0
        return max(0.0, self.clock.seconds() - self._due)

    def recent_max(self) -> float:
        """The worst lateness (s) over the last ``window`` seconds, the pending timer included."""
        since = self.clock.seconds() - self.window
        worst = max((lag for when, lag in self._recent if when >= since), default=0.0)
        return max(worst, self.overdue())

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(upper bound, observations <= bound)]`` as Prometheus wants it, ``+Inf`` last."""
        out, running = [], 0
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


__all__ = ["BUCKETS", "ReactorLag"]
