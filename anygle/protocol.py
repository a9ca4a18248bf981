"""The WebSocket protocol: decode, validate, dispatch to ``handle_<type>`` -- and the connection's
own housekeeping: admission at the handshake, frames buffered until ``connected``, a budget of
bad frames, and dropping a client that stops reading.

Wire format (the seed's, see README "WebSocket protocol"): every frame is a map
``{type, data}`` — msgpack in binary frames, JSON in text frames.  A client that sends JSON text
frames (or connects with ``?format=json``) is answered in JSON; everybody else in msgpack.

Client -> server::

    join          {ageCategory: teen|adult, mode: text|video|voice,
                   queueType: moderated|unmoderated, interests: [str], interestsOnly?: bool}
    message       {content: str, id?: str}  (id: ours, so that a resend is not delivered twice)
    resume        {token, lastMessageId}    (ours: the first frame of a new connection)
    skip          {reason?: str}
    report        {reason: harassment|sexual|underage|spam|hate|other, details?: str}  (ours)
    typing        {isTyping: bool}
    video_toggle  {enabled: bool}
    audio_toggle  {enabled: bool}
    offer|answer  RTCSessionDescriptionInit {type, sdp}       (relayed unchanged)
    ice_candidate RTCIceCandidateInit {candidate, sdpMid?, sdpMLineIndex?}  (relayed unchanged)
    ping

Server -> client::

    connected {userId, resumeToken?}   searching {position, estimatedTime}
    resumed {userId, state, roomId?, resumeToken, lastClientId}  (ours; then what was missed)
    partner_away                  partner_back                  (ours: the partner dropped/is back)
    matched {roomId, partnerId, mode, isInitiator, partnerInfo: {interests, sharedInterests}}
    message {id, content, timestamp}
    partner_typing {isTyping}     partner_video_toggle {enabled}   partner_audio_toggle {enabled}
    partner_skipped               partner_disconnected
    offer|answer|ice_candidate    (the partner's data, unchanged)
    moderation_warning {message, severity}
    report_received {reportId}    (ours)
    safety_notice {kind, message} (ours: to a teen, never to the sender)
    stats {totalOnline, inQueue, activeChats, avgMatchTime}
    error {code, message}         pong {timestamp}

Connection policy: bad frames are answered with ``error`` and the connection stays open, unless a
client sends more than ``ERROR_BUDGET`` bad frames within ``ERROR_WINDOW`` seconds (closed with
1008 after ``TOO_MANY_ERRORS``) or keeps flooding past its rate limits (``RATE_LIMITED``, then
1008).  Messages larger than the transport limit (64 KiB) are refused by Autobahn with close code
1009.  A client that stops reading is dropped once ``max-queued-bytes`` wait for it.
"""

from __future__ import annotations

import re
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from anygle import validate, wire
from anygle.admission import Refused, Ticket
from anygle.clientip import ClientAddressResolver
from anygle.engine.base import EngineUnavailable
from anygle.errors import ClientError
from anygle.fairturns import FRAMES_PER_TURN, TURN_SECONDS, FairTurnsMixin, TurnScheduler
from anygle.hub import Hub
from anygle.limits import MESSAGE_LIMITS, ConnectionLimits
from anygle.session import Session

ERROR_BUDGET = 20
ERROR_WINDOW = 10.0
INPUT_ERRORS = frozenset({"BAD_FRAME", "FRAME_TOO_LARGE", "UNKNOWN_TYPE", "INVALID_DATA"})
MAX_EARLY_FRAMES = 32  # frames buffered while the session is being opened

_log = Logger(namespace="anygle.protocol")


@implementer(IPushProducer)
class _SlowReaderGuard:
    """Registered as the transport's producer so that Twisted tells us when a client stops
    reading (its buffer passed 64 KiB); from then on we count what we queue for it."""

    __slots__ = ("backlog", "paused")

    def __init__(self) -> None:
        self.paused = False
        self.backlog = 0

    def pauseProducing(self) -> None:
        # Twisted calls this on every write while the buffer is over its size: count from the
        # first call only.
        if not self.paused:
            self.paused, self.backlog = True, 0

    def resumeProducing(self) -> None:
        self.paused, self.backlog = False, 0

    def stopProducing(self) -> None:
        self.paused = False


# Autobahn's own two base classes disagree on ``peer`` and ``_transport_details``.
class AnygleProtocol(FairTurnsMixin, WebSocketServerProtocol):  # type: ignore[misc]
    """One client connection; it handles a bounded number of frames per reactor turn
    (``anygle/fairturns.py``)."""

    factory: AnygleFactory

    def __init__(self) -> None:
        super().__init__()
        self.session: Session | None = None
        self.json = False
        self.limits: ConnectionLimits | None = None
        self._guard = _SlowReaderGuard()
        self._early: list[tuple[bytes, bool]] | None = []
        self._errors = 0
        self._errors_since = 0.0
        self.ticket: Ticket | None = None  # this connection's admission (``anygle.admission``)
        self._fresh = True  # no frame handled yet: ``resume`` is allowed
        self._resumable = True  # a drop keeps the session for a resume; a close by us does not

    # --- Autobahn callbacks ---------------------------------------------------------------
    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.registerProducer(self._guard, True)

    # Autobahn documents (and awaits) a Deferred from onConnect; its annotation omits it.
    def onConnect(self, request: Any) -> Deferred[None]:  # type: ignore[override]
        self.limits = ConnectionLimits(self.factory.message_limits)
        headers = request.headers
        address = self.factory.resolver.client(
            getattr(self.transport.getPeer(), "host", "unix"),
            [headers["x-forwarded-for"]] if "x-forwarded-for" in headers else [],
            headers.get("x-real-ip"),
        )
        self.json = "json" in request.params.get("format", ())
        self.ticket = Ticket(address)
        return Deferred.fromCoroutine(self._admit(self.ticket))

    async def _admit(self, ticket: Ticket) -> None:
        """Per-address limits and bans (``anygle.admission``): a refusal before the handshake is
        an HTTP status; the connection cap and bans are told once the socket is open."""
        try:
            await self.factory.hub.admission.connect(ticket)
        except Refused as e:
            raise ConnectionDeny(e.status, e.reason) from None

    def onOpen(self) -> None:
        self.factory.connections.add(self)
        assert self.ticket is not None  # onConnect came first
        if self.ticket.refusal is not None:
            self._early = None
            self.send(self.ticket.refusal.frame())
            self.close(1008, self.ticket.refusal.message)
            return
        d = Deferred.fromCoroutine(self.factory.hub.open(self, self.ticket.address))
        d.addCallbacks(self._opened, self._open_failed)

    def _opened(self, session: Session) -> None:
        self.session = session
        if self.state != self.STATE_OPEN:  # closed while we were opening
            self.factory.hub.close(session)
            return
        self._flush_early()

    def _open_failed(self, failure: Failure) -> None:
        self._early = None
        self._answer_failure(failure)
        self.close(1008 if failure.check(ClientError) else 1011, "refused")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self._early is not None:
            if len(self._early) >= MAX_EARLY_FRAMES:
                self.close(1008, "too many frames before connected")
            else:
                self._early.append((payload, isBinary))
            return
        self._receive(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.connections.discard(self)
        if self.ticket is not None:
            self.factory.hub.admission.release(self.ticket)
        if self.session is not None:
            clean = wasClean or not self._resumable
            d = self.factory.hub.disconnected(self.session, self, clean)
            d.addErrback(self._log_failure)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        # Break the two reference cycles a closed connection is part of (protocol <-> session,
        # and Autobahn's ``is_closed`` Deferred, whose result is the protocol), so that
        # reference counting frees it, its session and buffers at once. Left to the garbage
        # collector, which runs rarely on purpose (``tap.tune_gc``), 1,000 closed connections
        # held about 18 MB for half a minute under churn.
        self.session = None
        if getattr(self, "is_closed", None) is not None and self.is_closed.called:
            self.is_closed = None

    # --- dispatch ---------------------------------------------------------------------------
    def _receive(self, payload: bytes, is_binary: bool) -> None:
        if self.session is None:
            return
        try:
            frame = wire.decode(payload, is_binary)
            self.json = not is_binary
            kind = frame["type"]
            validator = validate.VALIDATORS.get(kind)
            if validator is None:
                raise ClientError("UNKNOWN_TYPE", f"unknown message type {kind[:40]!r}")
            assert self.limits is not None
            if not self.limits.allow(kind, self.factory.hub.clock.seconds()):
                raise ClientError("RATE_LIMITED", f"too many '{kind}' messages; slow down")
            result = getattr(self, "handle_" + kind)(self.session, validator(frame.get("data")))
            if isinstance(result, Deferred):
                result.addErrback(self._answer_failure)
        except Exception:
            self._answer_failure(Failure())
        self._fresh = False

    def _answer_failure(self, failure: Failure) -> None:
        """The one place where failures become ``error`` frames."""
        if isinstance(failure.value, ClientError):
            error = failure.value
            if error.code in INPUT_ERRORS and self._count_error():
                return
            if (
                error.code == "RATE_LIMITED"
                and self.limits
                and self.limits.flooding(self.factory.hub.clock.seconds())
            ):
                self.send(error.frame())
                self.close(1008, "flooding")
                return
        elif failure.check(EngineUnavailable):
            error = ClientError("SERVICE_UNAVAILABLE")
        else:
            self._log_failure(failure)
            error = ClientError("INTERNAL_ERROR")
        self.send(error.frame())

    def _count_error(self) -> bool:
        """Count a bad frame; close the connection (and return True) past the budget."""
        now = self.factory.hub.clock.seconds()
        if now - self._errors_since > ERROR_WINDOW:
            self._errors, self._errors_since = 0, now
        self._errors += 1
        if self._errors > ERROR_BUDGET:
            self.send(ClientError("TOO_MANY_ERRORS").frame())
            self.close(1008, "too many bad frames")
            return True
        return False

    def _log_failure(self, failure: Failure) -> None:
        _log.failure("unhandled error for {peer}", failure, peer=self.peer)

    # --- handlers: one per client message type ------------------------------------------------
    def handle_join(self, session: Session, prefs: Any) -> Deferred[Any]:
        return self.factory.hub.join(session, prefs)

    def handle_skip(self, session: Session, reason: str | None) -> Deferred[Any]:
        # The seed's optional reason is checked, then dropped on purpose: free text about a
        # stranger that nobody reads is only a liability to keep.  ``report`` is what gets read.
        return self.factory.hub.skip(session)

    def handle_message(
        self, session: Session, message: tuple[str, str | None]
    ) -> Deferred[Any] | None:
        return self.factory.hub.message(session, *message)

    def handle_resume(self, session: Session, resume: tuple[str, str | None]) -> None:
        if not self._fresh:
            raise ClientError("RESUME_FAILED", "resume must be the first frame of a connection")
        self._early = []  # later frames wait for the session they belong to
        d = Deferred.fromCoroutine(self.factory.hub.resume(session, *resume))
        d.addCallbacks(self._resumed, self._resume_failed)

    def _resumed(self, session: Session) -> None:
        self.session = session
        self._flush_early()

    def _resume_failed(self, failure: Failure) -> None:
        self._answer_failure(failure)  # RESUME_FAILED: this connection's new session goes on
        self._flush_early()

    def _flush_early(self) -> None:
        early, self._early = self._early or [], None
        for payload, is_binary in early:
            self._receive(payload, is_binary)

    def handle_report(self, session: Session, report: tuple[str, str | None]) -> Deferred[Any]:
        return self.factory.hub.report(session, *report)

    def handle_typing(self, session: Session, is_typing: bool) -> None:
        self.factory.hub.relay(session, {"type": "partner_typing", "data": {"isTyping": is_typing}})

    def handle_video_toggle(self, session: Session, enabled: bool) -> None:
        self.factory.hub.relay(
            session, {"type": "partner_video_toggle", "data": {"enabled": enabled}}
        )

    def handle_audio_toggle(self, session: Session, enabled: bool) -> None:
        self.factory.hub.relay(
            session, {"type": "partner_audio_toggle", "data": {"enabled": enabled}}
        )

    def handle_offer(self, session: Session, data: dict[str, Any]) -> None:
        self.factory.hub.relay(session, {"type": "offer", "data": data})

    def handle_answer(self, session: Session, data: dict[str, Any]) -> None:
        self.factory.hub.relay(session, {"type": "answer", "data": data})

    def handle_ice_candidate(self, session: Session, data: dict[str, Any]) -> None:
        self.factory.hub.relay(session, {"type": "ice_candidate", "data": data})

    def handle_ping(self, session: Session, _: None) -> None:
        self.send({"type": "pong", "data": {"timestamp": self.factory.hub.now_ms()}})

    # --- Client (what the hub calls) ------------------------------------------------------------
    def send(self, frame: dict[str, Any]) -> None:
        if self.state != self.STATE_OPEN:
            return
        payload = wire.encode_text(frame) if self.json else wire.encode_binary(frame)
        if self._room_for(len(payload)):
            self.sendMessage(payload, isBinary=not self.json)

    def broadcast(self, message: wire.Broadcast) -> None:
        if self.state != self.STATE_OPEN:
            return
        prepared = message.prepared(self.factory, self.json)
        if self._room_for(len(prepared.payloadHybi)):
            self.sendPreparedMessage(prepared)

    def _room_for(self, size: int) -> bool:
        """Whether to queue ``size`` more bytes; a client that stopped reading is dropped (and
        its buffer with it; the partner is told) once it would hold too many."""
        guard = self._guard
        if guard.paused:
            guard.backlog += size
            if guard.backlog > self.factory.max_queued_bytes:
                _log.info("dropping {peer}: not reading", peer=self.peer)
                self.dropConnection(abort=True)
                return False
        return True

    def close(self, code: int, reason: str) -> None:
        self._resumable = False  # closed on purpose: no resume, even if the client never answers
        if self.state == self.STATE_OPEN:
            # sendClose() only allows the codes a *client application* may send (1000, 3000-4999);
            # a server legitimately closes with 1001 (going away), 1008 (policy) or 1011 (error).
            self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123))
        elif self.state == self.STATE_CONNECTING:
            self.dropConnection(abort=True)


class AnygleFactory(WebSocketServerFactory):
    """Holds the hub and the live connections; Autobahn options are set in one place here."""

    # Twisted types ``protocol`` as a generic factory callable; the class is one.
    protocol = AnygleProtocol  # type: ignore[assignment]

    def __init__(
        self,
        hub: Hub,
        *,
        resolver: ClientAddressResolver,
        ping_interval: float = 25.0,
        ping_timeout: float = 10.0,
        allowed_origins: tuple[str, ...] = (),
        max_queued_bytes: int = 1 << 20,
        message_limits: dict[str, tuple[float, float]] | None = None,
        frames_per_turn: int = FRAMES_PER_TURN,
        turn_seconds: float = TURN_SECONDS,
        reactor: Any = None,
    ) -> None:
        super().__init__(reactor=reactor)
        self.hub = hub
        self.turns = TurnScheduler(self.reactor, frames_per_turn, turn_seconds)
        self.message_limits = MESSAGE_LIMITS if message_limits is None else message_limits
        self.resolver = resolver
        self.max_queued_bytes = max_queued_bytes
        self.connections: set[AnygleProtocol] = set()
        origins = [_with_port(o) for o in allowed_origins] or ["*"]
        # Autobahn's defaults are permissive (unlimited frames, no pings): set each deliberately.
        self.setProtocolOptions(
            maxFramePayloadSize=64 * 1024,  # our 16 KiB limit is checked per message, with an error
            maxMessagePayloadSize=64 * 1024,
            autoPingInterval=ping_interval,
            autoPingTimeout=ping_timeout,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            tcpNoDelay=True,
            failByDrop=False,  # tell a violating client why (e.g. 1009 too big) before closing
            allowedOrigins=origins,  # a request without Origin (not a browser) is allowed
            allowNullOrigin=not allowed_origins,
            trustXForwardedFor=0,
            perMessageCompressionAccept=lambda offers: None,
        )


def _with_port(origin: str) -> str:
    """Autobahn matches patterns against ``scheme://host:port``; operators write origins as
    browsers send them (``https://anygle.example``), so add the scheme's default port."""
    if re.search(r":(\d+|\*)$", origin) or "://" not in origin:
        return origin
    return origin + {"https": ":443", "http": ":80"}.get(origin.split("://", 1)[0], ":*")
