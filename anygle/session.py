"""The state of one connected user on this instance, as the hub sees it."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed

from anygle.model import Preferences
from anygle.reports import EndedChat, Transcript
from anygle.resume import CLIENT_IDS_KEPT, AwayClient
from anygle.wire import Broadcast

IDLE, QUEUED, CHATTING, CLOSED = "idle", "queued", "chatting", "closed"
ENDED_ROOMS_KEPT = 8


class Client(Protocol):
    """What the hub needs from a connection (the WebSocket protocol, or a test double)."""

    def send(self, frame: dict[str, Any]) -> None: ...

    def broadcast(self, message: Broadcast) -> None:
        """Send a frame that many clients get (encoded once for all of them)."""

    def close(self, code: int, reason: str) -> None: ...


@dataclass(eq=False, slots=True, weakref_slot=True)
class Session:
    user_id: str
    ip: str  # the client address as resolved (anygle.clientip)
    client: Client
    # What per-address rules count this user under (an IPv6 client: its /64): the connection
    # cap, rates, strikes, bans, distinct reporters.  Defaults to ``ip``.
    abuse_key: str = ""
    ban_keys: tuple[str, ...] = ()  # names under banned:ips: that refuse it (ip first)
    state: str = IDLE
    prefs: Preferences | None = None  # last join; a skip requeues with it
    room_id: str | None = None
    partner_id: str | None = None
    queued_at: float = 0.0
    # the last ENDED_ROOMS_KEPT rooms that ended before we heard they began (cross-instance
    # event order is not guaranteed); made on the first ended room, and a list: an empty deque
    # alone takes 770 bytes
    _ended_rooms: list[str] | None = None
    moderation_window: Any = None  # anygle.moderation.SenderWindow, made on the first message
    transcript: Transcript | None = None  # the partner's messages in this room (for a report)
    last_chat: EndedChat | None = None  # the chat that ended last, reportable for a while
    pending: int = 0  # operations queued by serial() and not finished
    _tail: Deferred[Any] | None = None  # the last serial() operation (made by the first)
    resume_token: str = ""  # the secret that takes this session back (anygle/resume.py)
    away: AwayClient | None = None  # the client while the user is away (dropped, in its grace)
    # ids of the user's recent messages (``message.id``, optional): a resent one is dropped
    _client_ids: deque[str] | None = None

    def accept_client_id(self, client_id: str) -> bool:
        """Remember a message id the user sent; False when it was seen already (a resend)."""
        ids = self._client_ids
        if ids is None:
            ids = self._client_ids = deque(maxlen=CLIENT_IDS_KEPT)
        elif client_id in ids:
            return False
        ids.append(client_id)
        return True

    def client_ids(self) -> list[str]:
        return list(self._client_ids or ())

    @property
    def last_client_id(self) -> str | None:
        return self._client_ids[-1] if self._client_ids else None

    def __post_init__(self) -> None:
        self.abuse_key = self.abuse_key or self.ip
        self.ban_keys = self.ban_keys or (self.ip,)

    def room_ended(self, room_id: str) -> None:
        if self._ended_rooms is None:
            self._ended_rooms = []
        self._ended_rooms.append(room_id)
        if len(self._ended_rooms) > ENDED_ROOMS_KEPT:
            del self._ended_rooms[0]

    def has_ended(self, room_id: str) -> bool:
        return self._ended_rooms is not None and room_id in self._ended_rooms

    def serial(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Deferred[Any]:
        """Run the coroutine function ``fn`` after this user's earlier queue/room operation.

        Join, skip and disconnect of one user may each wait on the engine; running them one at a
        time per user makes "in two rooms" and "queued twice" impossible by construction.  The
        returned Deferred carries ``fn``'s result or failure; the chain itself never breaks.
        """
        result: Deferred[Any] = Deferred()
        self.pending += 1

        def run(_: object) -> Deferred[Any]:
            d = Deferred.fromCoroutine(fn())
            d.addBoth(self._finished)
            d.chainDeferred(result)  # afterwards ``d`` holds None: the chain goes on
            return d

        if self._tail is None:
            self._tail = succeed(None)
        self._tail.addCallback(run)
        return result

    def _finished(self, outcome: Any) -> Any:
        self.pending -= 1
        return outcome
