"""One load-generating process: ``python -m bench.loadclient`` (started by ``bench.run``).

It speaks WebSocket by hand on a plain Twisted ``Protocol`` — no Autobahn on the client side —
so that the client costs much less per message than the server it measures (the pieces it shares
with ``bench/overloadclient.py`` are in ``bench/wsclient.py``):

* frames we send are pre-built bytes (client frames must be masked; a zero masking key is legal
  and leaves the payload as is), so a send is one ``transport.write`` of a constant;
* frames we receive are parsed with a few index operations; a chat message is recognised by its
  msgpack prefix and only counted (and echoed), never decoded.

Relay traffic is self-clocking: the initiator of each pair sends ``window`` messages, and every
message received is answered with one, so each pair keeps ``window`` messages in flight whatever
process or instance the partner is on.  The messages are one repeated line, or varied chat lines
(``bench/chatlines.py``) in chats of ``chat_messages``: then the initiator stops answering once
its chat had its length, skips when the messages in flight have arrived, and both sockets join
again to meet the next stranger; a line moderation held back is replaced by the next.

Control: the first line on stdin is the job (JSON); later lines are commands (``go``, ``join``,
``close``).  Events go to stdout as JSON lines (``progress``, ``ready``, ``result``, ``fatal``).
"""

from __future__ import annotations

import json
import os
import struct
import time
from typing import Any

import msgpack

from bench import chatlines, wsclient  # wsclient installs the epoll reactor
from bench.counts import COUNTS
from bench.wsclient import MSG_PREFIX, client_frame

# isort: split
from twisted.internet import reactor

SKIP = wsclient.packed("skip")
CLOSE_NORMAL = struct.pack("!H", 1000)  # a close frame's status: normal closure


class Stats:
    __slots__ = (
        "blocked",
        "chats",
        "closed",
        "connected",
        "delivered",
        "ended",
        "errors",
        "failed",
        "latencies",
        "matched",
        "mispaired",
        "notices",
        "opening",
        "searching",
    )

    def __init__(self) -> None:
        self.opening = 0
        self.connected = 0  # got the server's `connected`
        self.failed = 0  # connect or handshake failed
        self.closed = 0  # closed by the server after opening
        self.matched = 0
        self.searching = 0
        self.mispaired = 0
        self.delivered = 0
        self.blocked = 0  # moderation held a message back (the sender was warned)
        self.notices = 0  # safety notices received
        self.chats = 0  # chats begun after the first (each pair skips every chat_messages)
        self.ended = 0  # chats moderation ended (counted by both sockets of the pair)
        self.errors: dict[str, int] = {}
        self.latencies: list[tuple[float, bool]] = []  # (ms, isInitiator)

    def snapshot(self) -> dict[str, Any]:
        """The counts for the harness (``bench.procs.Workers.totals`` adds them up)."""
        return {**{k: getattr(self, k) for k in COUNTS}, "errors": dict(self.errors)}


class Conn(wsclient.RawWebSocket):
    """One raw WebSocket connection."""

    def __init__(self, worker: Worker, index: int, path: str, host: str) -> None:
        self.worker = worker
        self.stats = worker.stats
        self.index = index
        self.path = path
        self.host = host
        self.buf = b""
        self.open = False  # handshake done
        self.user_id: str | None = None
        self.partner_id: str | None = None
        self.partner: Conn | None = None  # the other socket of the pair, when in this process
        self.initiator = False
        self.state = "connecting"
        self.join_sent_at = 0.0
        self.in_chat = 0  # messages the initiator received in this chat
        self.close_sent = False  # our close frame is out: the server's is the answer

    # --- connection ----------------------------------------------------------------------
    def connect_failed(self, reason: str) -> None:
        self.worker.count_error("connect: " + reason[:60])
        self.connectionLost(None)

    def connectionLost(self, reason: Any = None) -> None:
        w = self.worker
        if self.state == "connecting":
            self.stats.failed += 1
            w.opened_one()
        elif not w.closing:
            self.stats.closed += 1
        self.state = "gone"
        w.conns[self.index] = None

    def send(self, frame: bytes) -> None:
        assert self.transport is not None
        self.transport.write(frame)

    # --- receiving ---------------------------------------------------------------------------
    def refused(self, status: str) -> None:
        self.worker.count_error("handshake: " + status[:60])

    def framesReceived(self, buf: bytes) -> None:
        pos, n = 0, len(buf)
        worker = self.worker
        transport = self.transport
        assert transport is not None
        while n - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            end = pos + head + length
            if end > n:
                break
            start = pos + head
            pos = end
            opcode = b0 & 0x0F
            if opcode == 2:
                if buf.startswith(MSG_PREFIX, start):
                    # the hot path: count, answer, nothing else
                    worker.stats.delivered += 1
                    if worker.echo:
                        if self.initiator and worker.chat_half and self.chat_over():
                            continue
                        transport.write(worker.next_frame())
                else:
                    self.frame(msgpack.unpackb(buf[start:end], raw=False))
            elif opcode == 9:  # ping -> pong with the same payload
                transport.write(client_frame(buf[start:end], 10))
            elif opcode == 10:  # pong: the reactor-stall probe
                worker.pong(self)
            elif opcode == 8:
                if not self.close_sent:
                    transport.write(client_frame(buf[start : start + 2], 8))
                transport.loseConnection()
                self.buf = b""
                return
            elif opcode == 1:
                self.frame(json.loads(buf[start:end]))
        self.buf = buf[pos:] if pos < n else b""

    def frame(self, f: dict[str, Any]) -> None:
        kind = f.get("type")
        data = f.get("data") or {}
        if kind == "connected":
            self.user_id = data.get("userId", "")
            self.state = "connected"
            self.stats.connected += 1
            self.worker.opened_one()
        elif kind == "matched":
            self.matched(data)
        elif kind == "searching":
            if self.state == "joining":
                self.state = "searching"
                self.stats.searching += 1
                self.worker.progressed()
        elif kind == "moderation_warning":
            # a line moderation held back was not delivered: send the next one so the pair
            # keeps its window (how many is part of the row)
            self.stats.blocked += 1
            if self.worker.echo:
                if self.initiator and self.worker.chat_half and self.chat_over():
                    return
                self.send(self.worker.next_frame())
        elif kind == "safety_notice":
            self.stats.notices += 1
        elif kind in ("partner_skipped", "partner_disconnected") and self.worker.chat_half:
            # the partner went on to the next chat (or moderation ended this one): so do we
            if kind == "partner_disconnected":
                self.stats.ended += 1
            self.next_chat()
        elif kind == "error":
            if data.get("code") == "NOT_IN_CHAT" and self.state != "matched":
                return  # sent before the chat ended, answered after: part of skipping
            self.worker.count_error(str(data.get("code")))
        elif kind not in ("stats", "pong"):
            # anything else (partner_disconnected in a row without chat lengths, ...) is not
            # expected in a benchmark run
            self.worker.count_error(f"frame {kind}")

    def chat_over(self) -> bool:
        """The initiator got an answer: True once the chat had its length (then it answers no
        more, and skips once the messages still in flight have all arrived, so that no
        message is lost to the skip)."""
        self.in_chat += 1
        w = self.worker
        if self.in_chat < w.chat_half:
            return False
        if self.in_chat >= w.chat_half + w.window - 1:
            self.next_chat()
        return True

    def next_chat(self) -> None:
        """Join the queue again (a ``join`` during a chat skips it), this time to meet any
        stranger (the server does not match a pair that just skipped each other again)."""
        if self.state != "matched":
            return
        if self.worker.job.get("one_chat"):  # the churn scenario: one chat, then a skip
            self.state = "done"
            if self.initiator:
                self.send(SKIP)
            return
        self.state, self.in_chat = "joining", 0
        self.join_sent_at = 0.0
        self.partner = None
        self.send(self.worker.rejoin_frame)

    def matched(self, data: dict[str, Any]) -> None:
        now = time.perf_counter()
        if self.state == "matched":
            self.worker.count_error("matched twice")
            return
        if self.state == "searching":
            self.stats.searching -= 1
        self.state = "matched"
        self.stats.matched += 1
        self.initiator = bool(data.get("isInitiator"))
        self.partner_id = data.get("partnerId")
        if self.join_sent_at:
            self.stats.latencies.append(((now - self.join_sent_at) * 1000.0, self.initiator))
        p = self.partner
        if p is not None and p.user_id and self.partner_id and self.partner_id != p.user_id:
            self.stats.mispaired += 1
        w = self.worker
        if w.echo and w.phase == "relay":  # a chat after the first
            self.stats.chats += 1
            if self.initiator:
                self.send(b"".join(w.next_frame() for _ in range(w.window)))
        w.progressed()


class Worker:
    """Opens the job's connections with a bounded number of handshakes in flight, then obeys."""

    def __init__(self, job: dict[str, Any], out: Any) -> None:
        self.job = job
        self.out = out
        self.stats = Stats()
        self.kind = job["kind"]
        self.n = int(job["n"])
        self.conns: list[Conn | None] = [None] * self.n
        self.next_index = 0
        self.in_flight = 0
        self.echo = False
        self.closing = False
        self.ready_sent = False
        self.phase = "open"
        # the chat messages to send, in turn: varied lines (bench/chatlines.py) or one line
        texts = job.get("texts")
        if texts:
            lines = chatlines.stream(texts, int(job.get("variants", 50000)), job["tag"])
        else:
            lines = [job.get("content", "x" * 60)]
        self.frames = [wsclient.packed("message", {"content": t}) for t in lines]
        self.next_index_frame = 0
        # messages per chat (0: one chat for the whole run); the initiator counts half of them
        self.chat_half = max(1, int(job["chat_messages"]) // 2) if job.get("chat_messages") else 0
        self.window = 0
        age = job.get("age", "adult")
        self.rejoin_frame = wsclient.join_frame(job.get("queue", "unmoderated"), [], False, age)
        self.limits = wsclient.limits(self.n + 64)
        self._progress_at = 0.0
        self._probe: dict[str, Any] | None = None

    # --- events to the harness --------------------------------------------------------------
    def next_frame(self) -> bytes:
        """The next chat message to send (the worker's messages go round in turn)."""
        i = self.next_index_frame
        self.next_index_frame = i + 1 if i + 1 < len(self.frames) else 0
        return self.frames[i]

    def emit(self, ev: str, **fields: Any) -> None:
        fields["ev"] = ev
        fields["worker"] = self.job.get("worker", 0)
        self.out.write(json.dumps(fields).encode() + b"\n")

    def count_error(self, code: str) -> None:
        self.stats.errors[code] = self.stats.errors.get(code, 0) + 1

    def progressed(self) -> None:
        now = time.monotonic()
        if now - self._progress_at >= 0.5:
            self._progress_at = now
            self.emit("progress", phase=self.phase, **self.stats.snapshot())
        self.check_ready()

    # --- opening ----------------------------------------------------------------------------
    def target(self, index: int) -> tuple[str, int]:
        targets = self.job["targets"]
        if self.kind == "relay":  # socket a of a pair -> first target, b -> last
            return tuple(targets[0] if index % 2 == 0 else targets[-1])
        return tuple(targets[index % len(targets)])

    def path(self, index: int) -> str:
        tag = self.job["tag"]
        if self.kind == "relay":
            return f"/?p={tag}-{index // 2}"
        return f"/?p={tag}-{index // 2}"  # baseline pairs sockets by this key, anygle ignores it

    def source(self, index: int) -> str | None:
        sources = self.job.get("sources") or []
        if not sources:
            return None
        per = int(self.job.get("per_source", 10000))
        return sources[min(index // per, len(sources) - 1)]

    def start(self) -> None:
        self.emit("started", pid=os.getpid(), **self.limits)
        self.fill()
        reactor.callLater(0.5, self.tick)

    def fill(self) -> None:
        limit = int(self.job.get("concurrency", 64))
        while self.in_flight < limit and self.next_index < self.n:
            i = self.next_index
            self.next_index += 1
            self.in_flight += 1
            host, port = self.target(i)
            conn = Conn(self, i, self.path(i), f"{host}:{port}")
            self.conns[i] = conn
            wsclient.connect(conn, (host, port), self.source(i), timeout=30)

    def opened_one(self) -> None:
        self.in_flight -= 1
        self.fill()
        if self.next_index >= self.n and self.in_flight == 0 and self.phase == "open":
            self.all_open()
        self.progressed()

    def all_open(self) -> None:
        self.phase = "setup"
        if self.kind == "relay" and self.job.get("protocol") == "anygle":
            self.join_pairs()
        self.check_ready()

    def join_pairs(self) -> None:
        queue = self.job.get("queue", "unmoderated")
        tag = self.job["tag"]
        for k in range(self.n // 2):
            a, b = self.conns[2 * k], self.conns[2 * k + 1]
            if a is None or b is None or a.state != "connected" or b.state != "connected":
                continue
            a.partner, b.partner = b, a
            frame = wsclient.join_frame(
                queue, [f"{tag}-{k}"[-32:]], age=self.job.get("age", "adult")
            )
            for c in (a, b):
                c.state = "joining"
                c.send(frame)
        if self.job.get("protocol") == "baseline":
            return

    def check_ready(self) -> None:
        if self.ready_sent or self.phase not in ("setup", "queued"):
            return
        s = self.stats
        if self.kind == "relay":
            live = s.connected - s.closed
            done = s.matched >= live
        elif self.phase == "queued":
            done = s.searching + s.matched >= s.connected - s.closed
        else:
            done = True
        if done:
            self.ready_sent = True
            self.emit("ready", phase=self.phase, **self.stats.snapshot())

    def tick(self) -> None:
        """Periodic progress, even when nothing happens (so the harness sees a stall)."""
        if self.closing:
            return
        self.emit("progress", phase=self.phase, **self.stats.snapshot())
        reactor.callLater(0.5, self.tick)

    # --- commands ---------------------------------------------------------------------------
    def command(self, cmd: dict[str, Any]) -> None:
        name = cmd["cmd"]
        if name == "go" and self.kind == "relay":
            self.go_relay(cmd)
        elif name == "go" and self.kind == "latency":
            self.go_latency(cmd)
        elif name == "join":
            self.join_queued(cmd)
        elif name == "ready?":
            self.ready_sent = False
            self.check_ready()
        elif name == "probe":
            self.probe(cmd)
        elif name == "close":
            self.close(cmd)

    # --- reactor-stall probe ----------------------------------------------------------------------
    def probe(self, cmd: dict[str, Any]) -> None:
        """One connection sends a WebSocket ping every ``interval`` s (one in flight) for
        ``seconds`` s: the pong round trips show how long the server's reactor stalls (for
        example while it pushes a frame to every client)."""
        conn = next((c for c in self.conns if c is not None and c.open), None)
        self._probe = {"conn": conn, "rtts": [], "sent": 0.0, "interval": float(cmd["interval"])}
        if conn is None:
            self.emit("probe", rtts=[])
            return
        self._probe_ping()

        def done() -> None:
            p, self._probe = self._probe, None
            assert p is not None  # one probe at a time: the harness waits for its answer
            self.emit("probe", rtts=[round(x, 3) for x in p["rtts"]])

        reactor.callLater(float(cmd["seconds"]), done)

    def _probe_ping(self) -> None:
        p = self._probe
        if p is None or p["conn"].transport is None:
            return
        p["sent"] = time.perf_counter()
        p["conn"].send(client_frame(b"probe", 9))

    def pong(self, conn: Conn) -> None:
        p = self._probe
        if p is None or conn is not p["conn"] or not p["sent"]:
            return
        p["rtts"].append((time.perf_counter() - p["sent"]) * 1000.0)
        p["sent"] = 0.0
        reactor.callLater(p["interval"], self._probe_ping)

    def go_relay(self, cmd: dict[str, Any]) -> None:
        self.phase = "relay"
        window = self.window = int(cmd.get("window", 10))
        self.echo = True
        for c in self.conns:
            if c is not None and c.state == "matched" and c.initiator:
                c.send(b"".join(self.next_frame() for _ in range(window)))
        warmup, duration = float(cmd["warmup"]), float(cmd["duration"])
        marks: dict[str, Any] = {}

        measured = ("blocked", "notices", "chats", "ended")  # counted over the window too

        def start() -> None:
            marks["t0"], marks["c0"] = time.perf_counter(), self.stats.delivered
            marks["cpu0"] = os.times()
            marks["counts"] = {k: getattr(self.stats, k) for k in measured}

        def stop() -> None:
            t1, c1, cpu1 = time.perf_counter(), self.stats.delivered, os.times()
            self.echo = False
            secs = t1 - marks["t0"]
            cpu = (cpu1.user + cpu1.system) - (marks["cpu0"].user + marks["cpu0"].system)
            counts = {k: getattr(self.stats, k) - marks["counts"][k] for k in measured}
            snapshot = self.stats.snapshot()
            self.emit(
                "result",
                **{k: v for k, v in snapshot.items() if k not in counts and k != "delivered"},
                **counts,
                delivered=c1 - marks["c0"],
                seconds=secs,
                rate=(c1 - marks["c0"]) / secs if secs > 0 else 0.0,
                cpu_seconds=cpu,
            )

        reactor.callLater(warmup, start)
        reactor.callLater(warmup + duration, stop)

    def go_latency(self, cmd: dict[str, Any]) -> None:
        """Send one join per connection at ``rate``/s, starting after ``offset`` s."""
        self.phase = "latency"
        rate = float(cmd["rate"])
        queue = self.job.get("queue", "unmoderated")
        frame = wsclient.join_frame(queue, [], only=False)
        conns = [c for c in self.conns if c is not None and c.state == "connected"]
        t0 = time.perf_counter() + float(cmd.get("offset", 0.0))
        state = {"i": 0}

        def pump() -> None:
            now = time.perf_counter()
            due = min(len(conns), int((now - t0) * rate) + 1) if now >= t0 else 0
            while state["i"] < due:
                c = conns[state["i"]]
                state["i"] += 1
                c.state = "joining"
                c.join_sent_at = time.perf_counter()
                c.send(frame)
            if state["i"] < len(conns):
                reactor.callLater(max(0.0, min(0.002, t0 + state["i"] / rate - now)), pump)
            else:
                reactor.callLater(float(cmd.get("grace", 3.0)), finish)

        def finish() -> None:
            lat = self.stats.latencies
            self.emit(
                "result",
                joins=len(conns),
                latencies=[round(ms, 3) for ms, _ in lat],
                initiator=[1 if i else 0 for _, i in lat],
                **self.stats.snapshot(),
            )

        reactor.callLater(0, pump)

    def join_queued(self, cmd: dict[str, Any]) -> None:
        """Every connection joins a queue with an interest nobody else has: it stays queued."""
        self.phase = "queued"
        tag = self.job["tag"]
        queue = self.job.get("queue", "unmoderated")
        for c in self.conns:
            if c is not None and c.state == "connected":
                c.state = "joining"
                c.send(wsclient.join_frame(queue, [f"q{tag}-{c.index}"[-32:]]))
        self.ready_sent = False
        self.check_ready()

    def close(self, cmd: dict[str, Any] | None = None) -> None:
        """Drop every connection (TCP reset: to the server, a connection lost, which it keeps
        for a resume); with ``clean`` first close each with a close frame, as a browser tab
        that is closed does, and drop what has not closed after 2 s."""
        self.closing = True
        self.echo = False
        if cmd and cmd.get("clean"):
            for c in self.conns:
                if c is not None and c.transport is not None and c.open:
                    c.close_sent = True
                    c.send(client_frame(CLOSE_NORMAL, 8))
            self._closed_by(time.monotonic() + 2.0)
            return
        self._drop_all()

    def _closed_by(self, deadline: float) -> None:
        if any(c is not None for c in self.conns) and time.monotonic() < deadline:
            reactor.callLater(0.05, self._closed_by, deadline)
        else:
            self._drop_all()

    def _drop_all(self) -> None:
        for c in self.conns:
            if c is not None and c.transport is not None:
                c.transport.abortConnection()
        self.emit("closed", **self.stats.snapshot())
        reactor.callLater(0.2, reactor.stop)


if __name__ == "__main__":
    wsclient.run(wsclient.Control(Worker))
