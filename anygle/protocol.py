"""The WebSocket protocol: decode, validate, dispatch to ``handle_<type>``; nothing else.

Wire format (the seed's, see README "Protocol"): every frame is a map ``{type, data}`` — msgpack in
binary frames, JSON in text frames.  A client that sends JSON text frames (or connects with
``?format=json``) is answered in JSON; everybody else in msgpack.

Client -> server::

    join          {ageCategory: teen|adult, mode: text|video|voice,
                   queueType: moderated|unmoderated, interests: [str], interestsOnly?: bool}
    message       {content: str}
    skip          {reason?: str}
    typing        {isTyping: bool}
    video_toggle  {enabled: bool}
    audio_toggle  {enabled: bool}
    offer|answer  RTCSessionDescriptionInit {type, sdp}       (relayed unchanged)
    ice_candidate RTCIceCandidateInit {candidate, sdpMid?, sdpMLineIndex?}  (relayed unchanged)
    ping

Server -> client::

    connected {userId}            searching {position, estimatedTime}
    matched {roomId, partnerId, mode, isInitiator, partnerInfo: {interests, sharedInterests}}
    message {id, content, timestamp}
    partner_typing {isTyping}     partner_video_toggle {enabled}   partner_audio_toggle {enabled}
    partner_skipped               partner_disconnected
    offer|answer|ice_candidate    (the partner's data, unchanged)
    moderation_warning {message, severity}
    stats {totalOnline, inQueue, activeChats, avgMatchTime}
    error {code, message}         pong {timestamp}

Connection policy: bad frames are answered with ``error`` and the connection stays open, unless a
client sends more than ``ERROR_BUDGET`` bad frames within ``ERROR_WINDOW`` seconds (closed with
1008 after ``TOO_MANY_ERRORS``).  Messages larger than the transport limit (64 KiB) are refused by
Autobahn with close code 1009.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from anygle import validate, wire
from anygle.engine.base import EngineUnavailable
from anygle.errors import ClientError
from anygle.hub import Hub
from anygle.session import Session

ERROR_BUDGET = 20
ERROR_WINDOW = 10.0
INPUT_ERRORS = frozenset({"BAD_FRAME", "FRAME_TOO_LARGE", "UNKNOWN_TYPE", "INVALID_DATA"})
MAX_EARLY_FRAMES = 32  # frames buffered while the session is being opened

_log = Logger(namespace="anygle.protocol")


class AnygleProtocol(WebSocketServerProtocol):
    """One client connection."""

    factory: AnygleFactory

    def __init__(self) -> None:
        super().__init__()
        self.session: Session | None = None
        self.client_ip = ""
        self.json = False
        self._early: list[tuple[bytes, bool]] | None = []
        self._errors = 0
        self._errors_since = 0.0

    # --- Autobahn callbacks ---------------------------------------------------------------
    def onConnect(self, request: Any) -> None:
        self.client_ip = self.factory.client_ip(self, request)
        self.json = "json" in request.params.get("format", ())

    def onOpen(self) -> None:
        self.factory.connections.add(self)
        d = Deferred.fromCoroutine(self.factory.hub.open(self, self.client_ip))
        d.addCallbacks(self._opened, self._open_failed)

    def _opened(self, session: Session) -> None:
        self.session = session
        if self.state != self.STATE_OPEN:  # closed while we were opening
            self.factory.hub.close(session)
            return
        early, self._early = self._early or [], None
        for payload, is_binary in early:
            self._receive(payload, is_binary)

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
        if self.session is not None:
            self.factory.hub.close(self.session).addErrback(self._log_failure)

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
            result = getattr(self, "handle_" + kind)(self.session, validator(frame.get("data")))
            if isinstance(result, Deferred):
                result.addErrback(self._answer_failure)
        except Exception:
            self._answer_failure(Failure())

    def _answer_failure(self, failure: Failure) -> None:
        """The one place where failures become ``error`` frames."""
        if failure.check(ClientError):
            error: ClientError = failure.value
            if error.code in INPUT_ERRORS and self._count_error():
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
        return self.factory.hub.skip(session)

    def handle_message(self, session: Session, content: str) -> Deferred[Any] | None:
        return self.factory.hub.message(session, content)

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
        if self.json:
            self.sendMessage(wire.encode_text(frame), isBinary=False)
        else:
            self.sendMessage(wire.encode_binary(frame), isBinary=True)

    def close(self, code: int, reason: str) -> None:
        if self.state == self.STATE_OPEN:
            # sendClose() only allows the codes a *client application* may send (1000, 3000-4999);
            # a server legitimately closes with 1001 (going away), 1008 (policy) or 1011 (error).
            self.sendCloseFrame(code=code, reasonUtf8=encode_truncate(reason, 123))
        elif self.state == self.STATE_CONNECTING:
            self.dropConnection(abort=True)


class AnygleFactory(WebSocketServerFactory):
    """Holds the hub and the live connections; Autobahn options are set in one place here."""

    protocol = AnygleProtocol

    def __init__(
        self,
        hub: Hub,
        *,
        ping_interval: float = 25.0,
        ping_timeout: float = 10.0,
        allowed_origins: list[str] | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__(reactor=reactor)
        self.hub = hub
        self.connections: set[AnygleProtocol] = set()
        origins = allowed_origins or ["*"]
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
            allowedOrigins=origins,
            allowNullOrigin=True,
            trustXForwardedFor=0,
            perMessageCompressionAccept=lambda offers: None,
        )

    def client_ip(self, proto: AnygleProtocol, request: Any) -> str:
        """The peer's address (trusted proxies are handled by the limits layer)."""
        peer = proto.transport.getPeer()
        return getattr(peer, "host", "") or "unix"
