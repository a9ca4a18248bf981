"""An instance without sockets or real time, for the core suite (tests/test_core.py).

The service is built as ``twistd anygle`` builds it (hub, memory engine, moderation, admission,
the Autobahn factory and the periodic tasks), but on a :class:`~twisted.internet.task.Clock`
instead of the reactor, and nothing listens: each client is an Autobahn client protocol joined
to a server protocol by in-memory transports (:mod:`twisted.test.iosim`).  Bytes move only when
the test calls :meth:`MemoryServer.flush` (or :meth:`advance`), and time moves only when it calls
:meth:`advance`, so "nothing arrives" is asserted by moving the clock past the moment it would
have arrived, without waiting, and every test runs in milliseconds.

Tests are plain functions: the memory engine answers at once, so every Deferred the hub makes
has fired by the time :meth:`flush` returns.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.test.iosim import FakeTransport

from anygle.moderation import Classifier
from anygle.tap import AnygleService
from tests.conftest import settings

__all__ = ["MemoryClient", "MemoryServer"]

_txaio: Any = txaio  # its configuration (the loop) is not in its type hints


class MemoryClient(WebSocketClientProtocol):
    """One user: the frames it received, in order, decoded."""

    server: MemoryServer

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.frozen = False  # stops reading and writing, as a phone that lost its network
        self.user_id: str | None = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        frame = msgpack.unpackb(payload, raw=False) if isBinary else json.loads(payload)
        if frame.get("type") == "connected":
            self.user_id = frame["data"]["userId"]
        self.received.append(frame)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.close_code = code

    # --- sending ----------------------------------------------------------------------------
    def send(self, type_: str, data: Any = None) -> None:
        """Send a frame and let everything it causes happen (time stands still)."""
        frame: dict[str, Any] = {"type": type_}
        if data is not None:
            frame["data"] = data
        self.sendMessage(msgpack.packb(frame), isBinary=True)
        self.server.flush()

    def join(self, age: str = "adult", mode: str = "text", **extra: Any) -> None:
        data = {"ageCategory": age, "mode": mode, "queueType": "moderated", "interests": []}
        data.update(extra)
        self.send("join", data)

    # --- reading ----------------------------------------------------------------------------
    def of(self, *types: str) -> list[dict[str, Any]]:
        """The received frames of ``types``, in order."""
        return [f for f in self.received if f["type"] in types]

    def last(self, type_: str) -> dict[str, Any]:
        frames = self.of(type_)
        assert frames, f"no {type_!r} frame; received {[f['type'] for f in self.received]}"
        return frames[-1]

    def take(self) -> list[str]:
        """The types of the frames received since the last take, the pushes left out."""
        types = [f["type"] for f in self.received if f["type"] not in ("stats", "searching")]
        self.received.clear()
        return types


class _Link:
    """The two transports of one connection, and whether bytes may cross it."""

    def __init__(self, client: MemoryClient, server_io: FakeTransport, client_io: FakeTransport):
        self.client = client
        self.server_io = server_io
        self.client_io = client_io

    def pump(self) -> bool:
        """Move what is buffered each way once; report a close.  True if anything happened."""
        moved = False
        if not self.client.frozen:
            to_client = self.server_io.getOutBuffer()
            to_server = self.client_io.getOutBuffer()
            if to_server:
                self.server_io.bufferReceived(to_server)
            if to_client:
                self.client_io.bufferReceived(to_client)
            moved = bool(to_client or to_server)
        if moved:
            return True
        for this, other in ((self.server_io, self.client_io), (self.client_io, self.server_io)):
            if this.disconnecting and not this.disconnected:
                this.disconnected = True
                other.disconnecting = True
                other.reportDisconnect()
                return True
        return False

    @property
    def closed(self) -> bool:
        return bool(self.server_io.disconnected and self.client_io.disconnected)


class MemoryServer:
    """The service on a clock, and its clients (see the module docstring)."""

    def __init__(self, classifier: Classifier, **overrides: Any) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000.0)  # a plausible "now" for times put on the wire
        # Autobahn schedules pings and handshake timeouts through txaio's loop, not through
        # the factory's reactor: that loop is the clock too, until close() (as Autobahn's own
        # tests do with txaio.testutil.replace_loop).
        self._loop = _txaio.config.loop
        _txaio.config.loop = self.clock
        try:
            self.service = AnygleService(settings(**overrides), self.clock, None, classifier)
            self.service.engine_service.startService()
            for timer in self.service.timers:
                timer.startService()
        except BaseException:
            _txaio.config.loop = self._loop
            raise
        self.hub = self.service.hub
        self.engine = self.service.engine
        self.links: list[_Link] = []
        self._port = 40000

    def close(self) -> None:
        """Stop the periodic tasks and the engine; give txaio its loop back."""
        try:
            for timer in self.service.timers:
                timer.stopService()
            self.service.engine_service.stopService()
        finally:
            _txaio.config.loop = self._loop

    def connect(self, query: str = "") -> MemoryClient:
        """A new client, its WebSocket opening handshake done."""
        self._port += 1
        factory = WebSocketClientFactory(f"ws://127.0.0.1:3001/{query}", reactor=self.clock)
        factory.setProtocolOptions(autoPingInterval=0)
        client = MemoryClient()
        client.factory = factory
        client.server = self
        server = self.service.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", self._port))
        assert server is not None
        server_io = FakeTransport(
            server,
            isServer=True,
            hostAddress=IPv4Address("TCP", "127.0.0.1", 3001),
            peerAddress=IPv4Address("TCP", "127.0.0.1", self._port),
        )
        client_io = FakeTransport(
            client,
            isServer=False,
            hostAddress=IPv4Address("TCP", "127.0.0.1", self._port),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 3001),
        )
        server.makeConnection(server_io)
        client.makeConnection(client_io)
        self.links.append(_Link(client, server_io, client_io))
        self.flush()
        return client

    def cut(self, client: MemoryClient) -> None:
        """The client's network is gone for good: the connection ends without a close frame
        (as the kernel reports a reset), and nothing it had not read yet reaches it."""
        client.frozen = True
        for link in self.links:
            if link.client is client:
                link.client_io.abortConnection()
        self.flush()

    def pair(self, **join: Any) -> tuple[MemoryClient, MemoryClient]:
        """Two clients matched with each other."""
        a, b = self.connect(), self.connect()
        a.join(**join)
        b.join(**join)
        self.advance(self.service.settings.match_interval)
        assert a.of("matched") and b.of("matched"), (a.received, b.received)
        return a, b

    def flush(self) -> None:
        """Deliver everything buffered, and run what is due now, until nothing moves."""
        for _ in range(10_000):
            self.clock.advance(0)
            moved = [link.pump() for link in self.links]
            self.links = [link for link in self.links if not link.closed]
            if not any(moved) and not self._due_now():
                return
        raise AssertionError("still busy after 10,000 rounds")

    def _due_now(self) -> bool:
        now = self.clock.seconds()
        return any(call.getTime() <= now for call in self.clock.getDelayedCalls())

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Let ``seconds`` pass, in steps (timers fire in order, bytes move between them)."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))
            self.flush()
        self.flush()
