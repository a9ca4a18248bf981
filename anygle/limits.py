"""Abuse limits as plain arithmetic: GCRA for per-IP rates, token buckets per connection.

The per-connection defaults let a real user through — a video call setup sends dozens of ICE
candidates in a second — and stop bots: a skip-bot gets 5 skips at once, then one every 2 s.
"""

from __future__ import annotations

from dataclasses import dataclass


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
