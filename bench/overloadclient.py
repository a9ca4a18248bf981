"""The overload and connect-storm client: ``python -m bench.overloadclient`` (started by
``bench.overload`` and by ``tests/test_overload.py``).

Same wire technique as ``bench/loadclient.py`` (``bench/wsclient.py``: plain Twisted protocols,
pre-built masked frames),
but every chat message carries a sequence number so that loss, duplication and reordering can be
counted per direction (this process holds both sockets of each pair).

The first line on stdin is the job (JSON); events go to stdout as JSON lines (``started``,
``progress``, ``ready``, ``result``, ``fatal``).  After the job it runs on its own:

``overload``  ``pairs`` pairs (socket a to the first target, b to the last), each joined with an
              interest of its own; then both sides of every pair send numbered messages at
              ``rate`` messages/s in total for ``duration`` s, an open loop bounded only by
              ``inflight`` unanswered messages per direction and by TCP backpressure (a socket
              whose write buffer is full sends nothing until it drains: a real client's
              ``bufferedAmount``); meanwhile ``flooders`` connections to the first target send
              bursts of ``flood_burst`` malformed frames, reconnecting after the server closes
              them.  Then it waits up to ``drain`` s for what was sent, and reports.
``storm``     ``n`` connections opened at once; the time until all have their WebSocket handshake
              (and, on anygle, the ``connected`` frame).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import msgpack
from twisted.internet.interfaces import IConsumer, IHalfCloseableProtocol, IPushProducer
from zope.interface import implementer

from bench import wsclient  # installs the epoll reactor
from bench.wsclient import MSG_PREFIX, client_frame

# isort: split
from twisted.internet import reactor

SEQ_DIGITS = 10
FILLER = " hey there! how is your day going? i am bored"  # + 10 digits + space: 56 bytes
BAD_FRAME = client_frame(b"\xc1 not msgpack")
PARTNER_LEFT = ("partner_skipped", "partner_disconnected")


def message_template() -> tuple[bytes, bytes]:
    """A masked ``message`` frame split around its 10-digit sequence number."""
    marker = "9" * SEQ_DIGITS
    frame = wsclient.packed("message", {"content": marker + FILLER})
    i = frame.index(marker.encode())
    return frame[:i], frame[i + SEQ_DIGITS :]


HEAD, TAIL = message_template()


def frames(buf: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Complete server frames in ``buf`` as ``(opcode, payload)``, and the rest."""
    out, pos, n = [], 0, len(buf)
    while n - pos >= 2:
        length, head = buf[pos + 1] & 0x7F, 2
        if length == 126:
            if n - pos < 4:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            if n - pos < 10:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        end = pos + head + length
        if end > n:
            break
        out.append((buf[pos] & 0x0F, buf[pos + head : end]))
        pos = end
    return out, buf[pos:]


def content_seq(payload: bytes) -> int | None:
    """The sequence number of a delivered chat message (``data.content`` starts with it)."""
    i = payload.find(b"\xa7content")
    if i < 0:
        return None
    i += 8
    tag = payload[i]
    start = i + (1 if 0xA0 <= tag <= 0xBF else 2 if tag == 0xD9 else 3)
    try:
        return int(payload[start : start + SEQ_DIGITS])
    except ValueError:
        return None


class Direction:
    """One way of one pair: what was sent, what arrived (bitmap), order and duplicates."""

    __slots__ = ("dup", "got", "last", "received", "reordered", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0  # unique
        self.dup = 0
        self.reordered = 0
        self.last = -1
        self.got = bytearray()

    def arrived(self, seq: int) -> None:
        if seq >= len(self.got):
            self.got.extend(bytes(max(seq + 1 - len(self.got), 1024)))
        if self.got[seq]:
            self.dup += 1
            return
        self.got[seq] = 1
        self.received += 1
        if seq < self.last:
            self.reordered += 1
        else:
            self.last = seq

    @property
    def inflight(self) -> int:
        return self.sent - self.received


@implementer(IPushProducer)
class Conn(wsclient.RawWebSocket):
    """One raw WebSocket connection; also the producer its transport pauses when full."""

    pair: int  # the number of the pair (roles "a" and "b" only)

    def __init__(self, client: Client, role: str, path: str = "/") -> None:
        self.client = client
        self.role = role  # "a", "b", "flood", "storm"
        self.path = path
        self.buf = b""
        self.open = False
        self.user_id: str | None = None
        self.partner_id: str | None = None
        self.matched = False
        self.paused = False
        self.gone = False
        self.out: Direction | None = None  # messages this socket sends
        self.inbound: Direction | None = None  # messages this socket receives
        self.peer: Conn | None = None
        self.allowance = 0.0
        self.opened_at: float | None = None
        self.connected_at: float | None = None

    # producer interface: Twisted calls these when our write buffer passes 64 KiB / drains
    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True

    def connectionMade(self) -> None:
        # a TCP transport is also the consumer of its producer (typed as ITCPTransport only)
        IConsumer(self.transport).registerProducer(self, True)
        super().connectionMade()

    def connectionLost(self, reason: Any = None) -> None:
        self.gone = True
        self.client.lost(self)

    def connect_failed(self, reason: str) -> None:
        self.client.error("connect " + reason[:50])
        self.connectionLost(None)

    def refused(self, status: str) -> None:
        self.client.error("handshake " + status[:40])

    def upgraded(self) -> None:
        self.opened_at = time.perf_counter()
        self.client.opened(self)

    def framesReceived(self, buf: bytes) -> None:
        got, self.buf = frames(buf)
        transport = self.transport
        assert transport is not None
        for opcode, payload in got:
            if opcode == 2:
                self.binary(payload)
            elif opcode == 9:
                transport.write(client_frame(payload, 10))
            elif opcode == 8:
                transport.write(client_frame(payload[:2], 8))
                transport.loseConnection()
                return
            elif opcode == 1:
                self.frame(json.loads(payload))

    def binary(self, payload: bytes) -> None:
        if payload.startswith(MSG_PREFIX) and self.inbound is not None:
            seq = content_seq(payload)
            if seq is None:
                self.client.error("unreadable message")
            else:
                self.inbound.arrived(seq)
                self.client.delivered += 1
            return
        self.frame(msgpack.unpackb(payload, raw=False))

    def frame(self, f: dict[str, Any]) -> None:
        kind, data = f.get("type"), f.get("data") or {}
        if kind == "connected":
            self.user_id = data.get("userId")
            self.connected_at = time.perf_counter()
            self.client.connected(self)
        elif kind == "matched":
            self.matched = True
            self.partner_id = data.get("partnerId")
            self.client.matched_one(self)
        elif kind in PARTNER_LEFT:
            self.client.ended[kind] = self.client.ended.get(kind, 0) + 1
        elif kind == "error":
            self.client.error(str(data.get("code")), flood=self.role == "flood")
        elif kind not in ("stats", "searching", "pong"):
            self.client.error(f"frame {kind}")

    def send_messages(self, count: int) -> None:
        out = self.out
        assert out is not None and self.transport is not None
        seq = out.sent
        self.transport.write(b"".join(HEAD + b"%010d" % s + TAIL for s in range(seq, seq + count)))
        out.sent = seq + count


class Client:
    def __init__(self, job: dict[str, Any], out: Any) -> None:
        self.job = job
        self.out = out
        self.kind = job["kind"]
        self.t0 = time.perf_counter()
        self.conns: list[Conn] = []
        self.errors: dict[str, int] = {}
        self.flood_errors: dict[str, int] = {}
        self.ended: dict[str, int] = {}
        self.delivered = 0
        self.closed_by_server = 0
        self.n_open = 0
        self.n_connected = 0
        self.n_matched = 0
        self.n_failed = 0
        self.held_back = 0  # messages the open loop wanted to send but backpressure held back
        self.flood_sent = 0
        self.flood_connections = 0
        self.phase = "connecting"
        self.limits = wsclient.limits(int(job.get("n", 0)) + 2 * int(job.get("pairs", 0)) + 256)

    # --- events -------------------------------------------------------------------------------
    def emit(self, ev: str, **fields: Any) -> None:
        self.out.write(json.dumps({"ev": ev, **fields}).encode() + b"\n")

    def error(self, code: str, flood: bool = False) -> None:
        table = self.flood_errors if flood else self.errors
        table[code] = table.get(code, 0) + 1

    def counts(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "open": self.n_open,
            "connected": self.n_connected,
            "matched": self.n_matched,
            "failed": self.n_failed,
            "delivered": self.delivered,
            "sent": sum(c.out.sent for c in self.conns if c.out is not None),
            "flood_sent": self.flood_sent,
            "ended": sum(self.ended.values()),
            "errors": dict(self.errors),
        }

    def progress(self) -> None:
        self.emit("progress", **self.counts())
        reactor.callLater(0.5, self.progress)

    # --- connections --------------------------------------------------------------------------
    def connect(self, conn: Conn, target: Any, source: str | None) -> None:
        wsclient.connect(conn, target, source, timeout=60)

    def opened(self, conn: Conn) -> None:
        self.n_open += 1
        if self.kind == "storm" and self.job["protocol"] == "baseline":
            self.storm_check()

    def connected(self, conn: Conn) -> None:
        self.n_connected += 1
        if self.kind == "storm":
            self.storm_check()
        elif conn.role in ("a", "b"):
            tag = f"{self.job['tag']}-{conn.pair}"
            assert conn.transport is not None
            conn.transport.write(wsclient.join_frame(self.job.get("queue", "unmoderated"), [tag]))

    def lost(self, conn: Conn) -> None:
        if conn.role == "flood":
            if self.phase == "sending":  # the server closed it: flood again
                reactor.callLater(0.05, self.flooder)
            return
        if not conn.open:
            self.n_failed += 1
            if self.kind == "storm" and self.phase == "storm":
                self.storm_check()
        elif self.phase not in ("closing",) and conn.role in ("a", "b"):
            self.closed_by_server += 1

    def matched_one(self, conn: Conn) -> None:
        self.n_matched += 1
        peer = conn.peer
        if peer is not None and peer.user_id and conn.partner_id != peer.user_id:
            self.error("mispaired")
        if self.phase == "connecting" and self.n_matched == 2 * int(self.job["pairs"]):
            self.emit("ready", **self.counts())
            self.phase = "sending"
            self.start_sending()

    # --- overload -------------------------------------------------------------------------------
    def start_overload(self) -> None:
        job = self.job
        targets = [tuple(t) for t in job["targets"]]
        sources = job.get("sources") or [None]
        for p in range(int(job["pairs"])):
            a = Conn(self, "a")
            b = Conn(self, "b")
            a.pair = b.pair = p
            a.peer, b.peer = b, a
            a.out = b.inbound = Direction()
            b.out = a.inbound = Direction()
            self.conns += [a, b]
            src = sources[p % len(sources)]
            self.connect(a, targets[0], src)
            self.connect(b, targets[-1], src)
        reactor.callLater(float(job.get("setup_timeout", 60)), self.setup_timeout)

    def setup_timeout(self) -> None:
        if self.phase == "connecting":
            self.emit("fatal", error=f"pairs not matched in time: {self.counts()}")
            reactor.callLater(0.2, reactor.stop)

    def start_sending(self) -> None:
        job = self.job
        senders = [c for c in self.conns if c.out is not None]
        self.per_conn = float(job["rate"]) / max(1, len(senders))
        self.inflight_cap = int(job.get("inflight", 500))
        self.tick_at = time.perf_counter()
        self.send_until = self.tick_at + float(job["duration"])
        self.send_started = self.tick_at
        for _ in range(int(job.get("flooders", 0))):
            self.flooder()
        self.tick()

    def flooder(self) -> None:
        if self.phase != "sending":
            return
        conn = Conn(self, "flood")
        self.flood_connections += 1

        def burst(c: Conn = conn) -> None:
            if c.gone or self.phase != "sending":
                return
            if c.open and c.transport is not None:
                n = int(self.job.get("flood_burst", 2000))
                c.transport.write(BAD_FRAME * n)
                self.flood_sent += n
            else:
                reactor.callLater(0.05, burst)

        targets = [tuple(t) for t in self.job["targets"]]
        self.connect(conn, targets[0], None)
        reactor.callLater(0.05, burst)

    def tick(self) -> None:
        now = time.perf_counter()
        dt, self.tick_at = now - self.tick_at, now
        if now >= self.send_until:
            self.phase = "draining"
            self.drain_until = now + float(self.job.get("drain", 30))
            self.send_seconds = now - self.send_started
            self.drain()
            return
        cap = self.inflight_cap
        for c in self.conns:
            out = c.out
            if out is None or c.gone or not c.open:
                continue
            c.allowance = min(c.allowance + self.per_conn * dt, max(1.0, self.per_conn * 0.1))
            want = int(c.allowance)
            if not want:
                continue
            room = 0 if c.paused else max(0, cap - out.inflight)
            n = min(want, room)
            if n:
                c.send_messages(n)
            self.held_back += want - n
            c.allowance -= want
        reactor.callLater(0.005, self.tick)

    def drain(self) -> None:
        left = sum(c.out.inflight for c in self.conns if c.out is not None and not c.gone)
        if left and time.perf_counter() < self.drain_until:
            reactor.callLater(0.05, self.drain)
            return
        self.finish()

    def finish(self) -> None:
        dirs = [c.out for c in self.conns if c.out is not None]
        sent = sum(d.sent for d in dirs)
        received = sum(d.received for d in dirs)
        self.phase = "closing"
        fields = self.counts()
        fields.update(
            sent=sent,
            delivered_unique=received,
            lost=sent - received,
            duplicated=sum(d.dup for d in dirs),
            reordered=sum(d.reordered for d in dirs),
            chats_ended=sum(self.ended.values()),
            ended_by_kind=dict(self.ended),
            closed_by_server=self.closed_by_server,
            held_back=self.held_back,
            send_seconds=round(self.send_seconds, 3),
            offered_rate=float(self.job["rate"]),
            sent_rate=round(sent / max(self.send_seconds, 1e-3), 1),
            flood_frames=self.flood_sent,
            flood_connections=self.flood_connections,
            flood_errors=dict(self.flood_errors),
            limits=self.limits,
        )
        self.emit("result", **fields)
        self.close_all()

    # --- storm ------------------------------------------------------------------------------------
    def start_storm(self) -> None:
        job = self.job
        target = tuple(job["targets"][0])
        sources = job.get("sources") or [None]
        per = int(job.get("per_source", 10000))
        self.storm_t0 = time.perf_counter()
        for i in range(int(job["n"])):
            conn = Conn(self, "storm")
            self.conns.append(conn)
            self.connect(conn, target, sources[(i // per) % len(sources)])
        self.storm_connect_calls = time.perf_counter() - self.storm_t0
        reactor.callLater(float(job.get("timeout", 120)), self.storm_done)

    def storm_check(self) -> None:
        n = int(self.job["n"])
        done = self.n_connected if self.job["protocol"] == "anygle" else self.n_open
        if done + self.n_failed >= n:
            self.storm_done()

    def storm_done(self) -> None:
        if self.phase == "closing":
            return
        self.phase = "closing"
        t0 = self.storm_t0
        opened = sorted(c.opened_at - t0 for c in self.conns if c.opened_at)
        connected = sorted(c.connected_at - t0 for c in self.conns if c.connected_at)

        def pct(xs: list[float], q: float) -> float | None:
            return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3) if xs else None

        self.emit(
            "result",
            n=int(self.job["n"]),
            open=len(opened),
            connected=len(connected),
            failed=self.n_failed,
            all_open_s=round(opened[-1], 3) if len(opened) == int(self.job["n"]) else None,
            all_connected_s=(
                round(connected[-1], 3) if len(connected) == int(self.job["n"]) else None
            ),
            open_p50_s=pct(opened, 0.5),
            open_p99_s=pct(opened, 0.99),
            connect_calls_s=round(self.storm_connect_calls, 3),
            errors=dict(self.errors),
            limits=self.limits,
        )
        self.close_all()

    # --- end --------------------------------------------------------------------------------------
    def close_all(self) -> None:
        self.phase = "closing"
        for c in self.conns:
            if c.transport is not None and not c.gone:
                c.transport.abortConnection()
        reactor.callLater(0.3, reactor.stop)

    def command(self, msg: dict[str, Any]) -> None:
        if msg.get("cmd") == "close":  # the harness gives up early
            self.close_all()

    def start(self) -> None:
        self.emit("started", pid=os.getpid(), limits=self.limits)
        self.progress()
        if self.kind == "overload":
            self.start_overload()
        elif self.kind == "storm":
            self.phase = "storm"
            self.start_storm()
        else:
            raise ValueError(f"unknown job kind {self.kind!r}")


@implementer(IHalfCloseableProtocol)
class HalfClosedControl(wsclient.Control):
    """Stdin may be closed after the job: the job runs to its bounded end."""

    def readConnectionLost(self) -> None:
        if self.job is None and reactor.running:  # no job: nothing to do
            reactor.stop()

    def writeConnectionLost(self) -> None:
        if reactor.running:  # nobody reads our results any more
            reactor.stop()


if __name__ == "__main__":
    wsclient.run(HalfClosedControl(Client))
