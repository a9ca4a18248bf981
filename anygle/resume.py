"""Session resume: a user whose connection dropped without a close frame (a phone switching
networks) keeps its session for a grace period and takes it back from a new connection.

While the user is away the session's client is an :class:`AwayClient`: the frames the hub sends
it are kept (bounded), and :func:`replay` puts together what the returning client missed — the
partner's messages after the last one it says it got, then the frames kept while it was away.

The resume token is a secret of 144 bits, new on every resume; it is looked up by its SHA-256
(a dict lookup by a hash of the secret leaks nothing of the secret's bytes) and then compared in
constant time.  See docs/protocol.md "Session resume".
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any

from anygle.wire import Broadcast, encode_binary

AWAY_FRAMES = 200  # frames kept for an away user; more ends its session (the partner is told)
AWAY_BYTES = 64 * 1024  # encoded bytes kept for an away user, likewise
RESUME_ATTEMPTS = 10  # resume attempts per abuse key (address, IPv6 /64) ...
RESUME_WINDOW = 60.0  # ... per this many seconds
CLIENT_IDS_KEPT = 64  # recent client message ids a session remembers (a resent one is dropped)

# Not kept while away: superseded by the next one, or said again by ``resumed``.
TRANSIENT = frozenset({"stats", "searching", "partner_typing", "pong"})


def new_token() -> str:
    return secrets.token_urlsafe(18)  # 144 bits


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


class AwayClient:
    """Stands in for the connection of a user who is away: keeps what is sent to it."""

    __slots__ = ("bytes", "end", "frames", "missed", "timer")

    def __init__(self, missed: list[dict[str, Any]], end: Callable[[], None]) -> None:
        self.missed = missed  # the partner's messages sent before the drop (maybe not received)
        self.frames: list[dict[str, Any]] = []
        self.bytes = 0
        self.end = end  # ends the session (grace over, kicked, too much kept)
        self.timer: Any = None

    def send(self, frame: dict[str, Any]) -> None:
        if frame.get("type") in TRANSIENT:
            return
        self.bytes += len(encode_binary(frame))
        self.frames.append(frame)
        if len(self.frames) > AWAY_FRAMES or self.bytes > AWAY_BYTES:
            self.end()

    def broadcast(self, message: Broadcast) -> None:
        self.send(message.frame)

    def close(self, code: int, reason: str) -> None:
        self.end()  # a kick or a ban while away: the session ends now


def replay(
    missed: list[dict[str, Any]], frames: list[dict[str, Any]], last_message_id: str | None
) -> list[dict[str, Any]]:
    """The frames a returning client is sent after ``resumed``, in order: the partner's messages
    (``missed``, the room's transcript at the drop) after ``last_message_id`` — all of them when
    it is unknown or None (the client got none of those still kept) — then ``frames``."""
    ids = [m["id"] for m in missed]
    start = ids.index(last_message_id) + 1 if last_message_id in ids else 0
    out = [{"type": "message", "data": m} for m in missed[start:]]
    out.extend(frames)
    return out
