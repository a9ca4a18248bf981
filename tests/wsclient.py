"""A real WebSocket client for the tests (Autobahn, in the test's reactor)."""

from __future__ import annotations

import json
from typing import Any

import msgpack
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import ITCPTransport

# frames a test rarely asserts on; expect() skips them unless asked for
NOISE = frozenset({"stats", "searching"})


class Closed(Exception):
    pass


class _Protocol(WebSocketClientProtocol):
    client: Client
    transport: ITCPTransport | None  # connected by a TCP endpoint (None before)

    def onOpen(self) -> None:
        self.client._opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        frame = msgpack.unpackb(payload, raw=False) if isBinary else json.loads(payload)
        self.client.received.append(frame)
        self.client.binary.append(isBinary)
        self.client._frames.put(frame)

    def onPing(self, payload: bytes) -> None:
        self.client.pings += 1
        super().onPing(payload)  # answers with a pong

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.client.close_code = code
        self.client.close_reason = reason
        if not self.client._opened.called:
            self.client._opened.errback(Closed(f"closed before open: {code} {reason}"))
        self.client._frames.put(None)
        if not self.client.closed.called:
            self.client.closed.callback(code)


class Client:
    """``await Client.connect(port)``, then ``send``/``expect``."""

    def __init__(self) -> None:
        self._opened: defer.Deferred[_Protocol] = defer.Deferred()
        self._frames: defer.DeferredQueue[dict[str, Any] | None] = defer.DeferredQueue()
        self.received: list[dict[str, Any]] = []
        self.binary: list[bool] = []  # frame kind of each received frame
        self.pings = 0  # WebSocket pings from the server (each answered)
        self.closed: defer.Deferred[int | None] = defer.Deferred()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.proto: _Protocol | None = None
        self.user_id: str | None = None
        self.json = False

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        query: str = "",
        headers: dict[str, str] | None = None,
        wait_connected: bool = True,
        host: str = "127.0.0.1",
        bind: str | None = None,
    ) -> Client:
        client = cls()
        v6 = ":" in host
        url = f"ws://[{host}]:{port}/{query}" if v6 else f"ws://{host}:{port}/{query}"
        factory = WebSocketClientFactory(url, headers=headers or {})
        # a generous close handshake: a client that gives up on a busy server's close reply
        # drops the TCP connection, which the server rightly takes for a drop (a resume grace)
        factory.setProtocolOptions(
            autoPingInterval=0, maxFramePayloadSize=0, closeHandshakeTimeout=10
        )
        factory.protocol = _Protocol
        _Protocol.client = None  # type: ignore[assignment]

        def build(addr: Any) -> _Protocol:
            proto = _Protocol()
            proto.factory = factory
            proto.client = client
            return proto

        factory.buildProtocol = build  # type: ignore[method-assign]
        endpoint = (TCP6ClientEndpoint if v6 else TCP4ClientEndpoint)(
            reactor, host, port, timeout=10, bindAddress=(bind, 0) if bind else None
        )
        await endpoint.connect(factory)
        client.proto = await client._opened
        if wait_connected:
            frame = await client.expect("connected")
            client.user_id = frame["data"]["userId"]
        return client

    # --- sending ----------------------------------------------------------------------------
    def send(self, type_: str, data: Any = None, *, as_json: bool | None = None) -> None:
        frame: dict[str, Any] = {"type": type_}
        if data is not None:
            frame["data"] = data
        use_json = self.json if as_json is None else as_json
        if use_json:
            self.send_raw(json.dumps(frame).encode(), binary=False)
        else:
            self.send_raw(msgpack.packb(frame), binary=True)

    def send_raw(self, payload: bytes, *, binary: bool = True) -> None:
        assert self.proto is not None
        if self.proto.state == self.proto.STATE_OPEN:
            self.proto.sendMessage(payload, isBinary=binary)

    def join(
        self,
        age: str = "adult",
        mode: str = "text",
        queue: str = "moderated",
        interests: list[str] | None = None,
        **extra: Any,
    ) -> None:
        data = {"ageCategory": age, "mode": mode, "queueType": queue, "interests": interests or []}
        data.update(extra)
        self.send("join", data)

    # --- receiving ----------------------------------------------------------------------------
    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        d = self._frames.get()
        d.addTimeout(timeout, reactor)
        frame = await d
        if frame is None:
            self._frames.put(None)  # stay closed for later readers
            raise Closed(f"connection closed: {self.close_code} {self.close_reason}")
        return frame

    async def expect(self, *types: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of one of ``types``, skipping stats/searching noise; any other frame
        first is a failure."""
        deadline = reactor.seconds() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - reactor.seconds()))
            if frame["type"] in types:
                return frame
            if frame["type"] in NOISE:
                continue
            raise AssertionError(f"expected {types}, got {frame}")

    async def error(self, code: str, timeout: float = 5.0) -> dict[str, Any]:
        frame = await self.expect("error", timeout=timeout)
        assert frame["data"]["code"] == code, frame
        assert isinstance(frame["data"]["message"], str) and frame["data"]["message"]
        return frame

    async def quiet(self, seconds: float = 0.3) -> None:
        """Assert nothing but noise arrives for ``seconds``."""
        deadline = reactor.seconds() + seconds
        while (left := deadline - reactor.seconds()) > 0:
            try:
                frame = await self.next(left)
            except defer.TimeoutError:
                return
            if frame["type"] not in NOISE:
                raise AssertionError(f"unexpected frame {frame}")

    async def close(self) -> None:
        if self.proto is not None and not self.closed.called:
            self.proto.sendClose(1000)
            d = self.closed
            d.addTimeout(5, reactor)
            try:
                await d
            except defer.TimeoutError:
                self.proto.dropConnection(abort=True)

    def drop(self) -> None:
        """Vanish without a close handshake."""
        assert self.proto is not None and self.proto.transport is not None
        self.proto.transport.abortConnection()


async def match(a: Client, b: Client, **join: Any) -> str:
    """``a`` joins and waits (so it is the initiator), then ``b`` joins: both are told they were
    matched with each other, in one room, whose id is returned."""
    a.join(**join)
    await a.expect("searching")
    b.join(**join)
    ma, mb = await a.expect("matched"), await b.expect("matched")
    assert ma["data"]["roomId"] == mb["data"]["roomId"]
    assert ma["data"]["partnerId"] == b.user_id and mb["data"]["partnerId"] == a.user_id
    return ma["data"]["roomId"]
