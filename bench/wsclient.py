"""The WebSocket-by-hand pieces both load processes share (``bench/loadclient.py`` and
``bench/overloadclient.py``): frames, the upgrade, the harness's control channel on stdin.

Plain Twisted protocols instead of Autobahn, so that the client costs much less per message than
the server it measures.  Importing this module installs the epoll reactor: import it before
``twisted.internet.reactor``.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
from collections.abc import Callable
from typing import Any, Protocol

import msgpack
from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor, stdio  # noqa: E402
from twisted.internet.interfaces import ITCPTransport  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

from bench.filelimit import raise_nofile  # noqa: E402

# a msgpack map {"type": "message", ...}: what both anygle and the bare relay deliver for chat
MSG_PREFIX = b"\x82\xa4type\xa7message"
WS_KEY = base64.b64encode(b"anygle-bench-key").decode()  # 16 bytes; the server only checks shape


def client_frame(payload: bytes, opcode: int = 2) -> bytes:
    """A masked client frame with a zero masking key (RFC 6455 5.3: any 32-bit key is valid)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def packed(type_: str, data: Any = None) -> bytes:
    frame: dict[str, Any] = {"type": type_}
    if data is not None:
        frame["data"] = data
    return client_frame(msgpack.packb(frame))


def join_frame(queue: str, interests: list[str], only: bool = True, age: str = "adult") -> bytes:
    """A text ``join`` (``age``: ``adult`` or ``teen``); with ``only`` and an interest nobody
    else has, the user is matched with exactly the one that shares it (or stays queued)."""
    data: dict[str, Any] = {
        "ageCategory": age,
        "mode": "text",
        "queueType": queue,
        "interests": interests,
    }
    if only:
        data["interestsOnly"] = True
    return packed("join", data)


def handshake(path: str, host: str) -> bytes:
    """The upgrade request (the server answers ``101`` and then speaks frames)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def limits(wanted: int) -> dict[str, Any]:
    """Raise the file limit for ``wanted`` connections; what we got, for the ``started`` event."""
    nofile, note = raise_nofile(wanted)
    return {"nofile": nofile, "nofile_wanted": wanted, "nofile_note": note}


class RawWebSocket(protocol.Protocol):
    """A client connection speaking WebSocket by hand: the upgrade request to ``path`` when
    connected; then :meth:`upgraded` on the ``101`` (:meth:`refused` and an abort on anything
    else) and every later byte to :meth:`framesReceived`."""

    transport: ITCPTransport | None  # connected over TCP (None before)
    path = "/"
    host = "127.0.0.1"
    buf = b""  # received and not handled yet
    open = False  # upgraded

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.setTcpNoDelay(True)
        self.transport.write(handshake(self.path, self.host))

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.refused(buf.split(b"\r\n", 1)[0].decode("latin-1"))
                assert self.transport is not None
                self.transport.abortConnection()
                return
            self.open = True
            self.upgraded()
            buf = buf[end + 4 :]
        self.framesReceived(buf)

    def upgraded(self) -> None:
        """The server accepted the upgrade."""

    def refused(self, status: str) -> None:
        """The server answered the upgrade with ``status`` (the connection is then aborted)."""

    def framesReceived(self, buf: bytes) -> None:
        """``buf``: what is left of ``self.buf`` and the bytes just received, after the upgrade
        (frames, the last one maybe incomplete: keep the rest in ``self.buf``)."""
        raise NotImplementedError


class OneConnection(protocol.ClientFactory):
    """The factory of one connection made in advance; a failed connect goes to the
    connection's ``connect_failed(reason)``."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def buildProtocol(self, addr: Any) -> Any:
        return self.conn

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.conn.connect_failed(reason.getErrorMessage())


class Job(Protocol):
    """What a load process runs: made from the first line, told the later ones."""

    def start(self) -> None: ...

    def command(self, msg: dict[str, Any]) -> None: ...


def connect(conn: RawWebSocket, target: Any, source: str | None, timeout: float) -> None:
    """Connect ``conn`` (made in advance) to ``target`` (host, port) from the local address
    ``source`` (None: any)."""
    host, port = target
    reactor.connectTCP(
        host,
        port,
        OneConnection(conn),
        timeout=timeout,
        bindAddress=(source, 0) if source else None,
    )


class Control(LineReceiver):
    """The harness's JSON lines on stdin: the first makes the job (``make(job, stdout)``), the
    others are its commands; what fails on a line is reported as a ``fatal`` event before it
    propagates."""

    delimiter = b"\n"
    MAX_LENGTH = 10_000_000

    def __init__(self, make: Callable[[dict[str, Any], Any], Job]) -> None:
        self.make = make
        self.job: Job | None = None

    def lineReceived(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            msg = json.loads(line)
            if self.job is None:
                self.job = self.make(msg, self.transport)
                self.job.start()
            else:
                self.job.command(msg)
        except Exception as e:
            assert self.transport is not None
            self.transport.write(json.dumps({"ev": "fatal", "error": repr(e)}).encode() + b"\n")
            raise

    def connectionLost(self, reason: Any = None) -> None:
        # the harness went away: stop at once
        if reactor.running:
            reactor.stop()


def run(control: Control) -> None:
    """Serve ``control`` on stdin/stdout until the job is done."""
    stdio.StandardIO(control)
    # Stop by ourselves whatever happens to the harness (the bench must be bounded in time).
    reactor.callLater(float(os.environ.get("BENCH_WORKER_MAX_SECONDS", "900")), reactor.stop)
    reactor.run()
    sys.stdout.flush()
