"""Abuse limits as plain arithmetic: GCRA for per-IP rates, token buckets per connection, and
the capped table of the abuse keys (IPv4 addresses, IPv6 networks) that any per-IP state exists for.

The per-connection defaults let a real user through — a video call setup sends dozens of ICE
candidates in a second — and stop bots: a skip-bot gets 5 skips at once, then one every 2 s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import compress
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

_log = Logger(namespace="anygle.limits")


def gcra(tat: float, now: float, limit: int, window: float) -> tuple[bool, float]:
    """Generic cell rate algorithm: ``limit`` events per ``window`` s, bursts up to ``limit``.

    ``tat`` is the stored "theoretical arrival time" (0 for a new key); returns whether this event
    is allowed and the new ``tat`` to store (unchanged when denied, so denied calls cost nothing).
    """
    interval = window / limit
    tat = max(tat, now)
    if tat - now > window - interval:
        return False, tat
    return True, tat + interval


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # bucket size
    tokens: float = -1.0
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.stamp = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


# message kind -> (sustained per second, burst)
MESSAGE_LIMITS: dict[str, tuple[float, float]] = {
    "chat": (5.0, 15.0),  # message
    "typing": (10.0, 20.0),  # typing
    "toggle": (4.0, 10.0),  # video_toggle, audio_toggle
    "signal": (50.0, 200.0),  # offer, answer, ice_candidate: trickle ICE comes in bursts
    "queue": (0.5, 5.0),  # join, skip
    "report": (0.2, 3.0),  # report: one per chat is all a person needs
    "ping": (2.0, 10.0),
}

KIND_OF: dict[str, str] = {
    "message": "chat",
    "typing": "typing",
    "video_toggle": "toggle",
    "audio_toggle": "toggle",
    "offer": "signal",
    "answer": "signal",
    "ice_candidate": "signal",
    "join": "queue",
    "skip": "queue",
    "resume": "queue",
    "report": "report",
    "ping": "ping",
}

DEFAULT_SPEC = ",".join(f"{k}={r:g}/{b:g}" for k, (r, b) in MESSAGE_LIMITS.items())


def parse_message_limits(spec: str) -> dict[str, tuple[float, float]]:
    """``"chat=5/15,signal=50/200"`` → limits (kinds not named keep their default); ``"off"`` →
    no limits."""
    if spec.strip() == "off":
        return {}
    limits = dict(MESSAGE_LIMITS)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, value = part.partition("=")
        rate, _, burst = value.partition("/")
        if kind not in MESSAGE_LIMITS:
            raise ValueError(f"unknown message kind {kind!r} (known: {', '.join(MESSAGE_LIMITS)})")
        try:
            limits[kind] = (float(rate), float(burst))
        except ValueError:
            raise ValueError(f"{part!r} is not kind=rate/burst") from None
        if limits[kind][0] <= 0 or limits[kind][1] < 1:
            raise ValueError(f"{part!r}: rate must be > 0 and burst >= 1")
    return limits


FLOOD_BUDGET = 50  # RATE_LIMITED answers within FLOOD_WINDOW s before the connection is closed
FLOOD_WINDOW = 10.0


class ConnectionLimits:
    """One connection's buckets, and the count of how often it hit them lately."""

    __slots__ = ("_buckets", "_limited", "_limited_since", "_limits")

    def __init__(self, limits: dict[str, tuple[float, float]] = MESSAGE_LIMITS) -> None:
        self._limits = limits  # shared by all connections
        self._buckets: dict[str, TokenBucket] = {}  # made on first use: most users never signal
        self._limited = 0
        self._limited_since = 0.0

    def allow(self, message_type: str, now: float) -> bool:
        kind = KIND_OF.get(message_type, "")
        bucket = self._buckets.get(kind)
        if bucket is None:
            if kind not in self._limits:
                return True
            bucket = self._buckets[kind] = TokenBucket(*self._limits[kind])
        return bucket.take(now)

    def flooding(self, now: float) -> bool:
        """Count one refusal; ``True`` once this connection keeps flooding past the budget."""
        if now - self._limited_since > FLOOD_WINDOW:
            self._limited, self._limited_since = 0, now
        self._limited += 1
        return self._limited > FLOOD_BUDGET


DEFAULT_MAX_ABUSE_KEYS = 100_000
KEY_WINDOW = 60.0  # s a key is kept after its last handshake or request (the rate windows)
SWEEP_EVERY = 10.0  # s between sweeps of expired keys (and at most 1/s while full)
_CONNECTED = math.inf  # the expiry of a key with open connections


class AbuseKeyTable:
    """The abuse keys (``anygle.clientip.abuse_key``) this instance keeps state for, capped.

    Every per-key map — rate state, connection counts, strikes, in this process with the memory
    engine and in Redis with the redis engine — only gets keys admitted here, and each of those
    entries expires by itself (rates after their window, strikes after ``strike_ttl``), so a
    client cycling through addresses cannot make memory grow without bound.  A key stays while
    it has open connections, ``KEY_WINDOW`` s after its last handshake or HTTP request, and as
    long as :meth:`hold` asks (strikes).  With ``cap`` keys present, a handshake or request from
    a *new* key is refused (HTTP 503) until keys expire; known keys go on as before.  One
    warning is logged when refusing starts and one line when it ends.  ``cap=0``: no table.
    """

    __slots__ = ("_clock", "_conns", "_last_sweep", "_until", "cap", "refused", "refusing")

    def __init__(self, cap: int, clock: IReactorTime) -> None:
        self.cap = cap
        self._clock = clock
        self._until: dict[str, float] = {}  # key -> when it goes (inf while connected)
        # key -> [open connections, when it goes once they are closed]
        self._conns: dict[str, list[Any]] = {}
        self._last_sweep = clock.seconds()
        self.refused = 0  # new keys refused since start
        self.refusing = 0  # refused in the current episode (0: not full)

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, key: str) -> bool:
        return key in self._until

    def summary(self) -> dict[str, int]:
        """For ``/stats`` and the console."""
        return {"tracked": len(self._until), "cap": self.cap, "refused": self.refused}

    def admit(self, key: str) -> bool:
        """A handshake or HTTP request from ``key``: ``False`` when it is new and the table is
        full (refuse it: 503)."""
        if not self.cap:
            return True
        now = self._clock.seconds()
        until = self._until.get(key)
        if until is None:
            if now - self._last_sweep >= (1.0 if len(self._until) >= self.cap else SWEEP_EVERY):
                self._sweep(now)
            if len(self._until) >= self.cap:
                if not self.refusing:
                    _log.warn(
                        "{cap} client networks (abuse keys) tracked, the --max-abuse-keys cap: "
                        "refusing handshakes and requests from new ones (503) until some expire",
                        cap=self.cap,
                    )
                self.refused += 1
                self.refusing += 1
                return False
            if self.refusing:
                _log.info("accepting new client networks again ({n} refused)", n=self.refusing)
                self.refusing = 0
            until = 0.0
        self._until[key] = max(until, now + KEY_WINDOW)
        return True

    def connected(self, key: str) -> None:
        """An admitted connection opened: the key stays until it closes."""
        if not self.cap:
            return
        entry = self._conns.get(key)
        if entry is None:
            entry = self._conns[key] = [0, self._until.get(key, 0.0)]
            self._until[key] = _CONNECTED
        entry[0] += 1

    def disconnected(self, key: str) -> None:
        entry = self._conns.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            del self._conns[key]
            self._until[key] = max(entry[1], self._clock.seconds() + KEY_WINDOW)

    def hold(self, key: str, seconds: float) -> None:
        """Keep ``key`` at least ``seconds`` longer (its strikes live that long).  Never refused:
        the key is a connected one, already in the table."""
        if not self.cap:
            return
        until = self._clock.seconds() + seconds
        entry = self._conns.get(key)
        if entry is not None:
            entry[1] = max(entry[1], until)
        else:
            self._until[key] = max(self._until.get(key, 0.0), until)

    def _sweep(self, now: float) -> None:
        """Drop the keys whose time is up: every ``SWEEP_EVERY`` s, or at most once a second
        while full.  Both passes run at C speed (``map(now.__lt__, …)``): counting the live keys
        of 100,000 takes ~4 ms, rebuilding the table without the expired ones ~8 ms
        (bench/abuse_keys_memory.py)."""
        self._last_sweep = now
        until = self._until
        if sum(map(now.__lt__, until.values())) < len(until):
            self._until = dict(compress(until.items(), map(now.__lt__, until.values())))
