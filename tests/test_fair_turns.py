"""Fair reactor turns (``anygle/fairturns.py``), reactor lag (``anygle/reactorlag.py``) and the
listen backlog default: real WebSocket clients over loopback; counts, not wall-clock timings."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from anygle.reactorlag import BUCKETS, ReactorLag
from anygle.tap import default_backlog, with_backlog
from tests.harness import eventually
from tests.test_http import get

N = 8  # frames per connection per turn in these tests


def _count_handled(proto_cls, counts: dict[int, int]):
    """Wrap ``AnygleProtocol._receive`` to count the frames each connection handled."""
    original = proto_cls._receive

    def counting(self, payload, is_binary):
        counts[id(self)] = counts.get(id(self), 0) + 1
        return original(self, payload, is_binary)

    return original, counting


@pytest_twisted.ensureDeferred
async def test_burst_is_spread_over_turns_in_order(server, monkeypatch):
    """10*N messages in one TCP write all arrive, in order, once; the server handled them over
    many reactor turns, with other calls (a test ticker) running in between."""
    from anygle.protocol import AnygleProtocol

    server.service.factory.turns.frames_per_turn = N
    a, b = await server.pair(queue="unmoderated")
    counts: dict[int, int] = {}
    _, counting = _count_handled(AnygleProtocol, counts)
    monkeypatch.setattr(AnygleProtocol, "_receive", counting)
    seen: list[int] = []  # frames handled (all connections) each time the ticker ran

    def tick() -> None:
        seen.append(sum(counts.values()))
        if len(seen) < 10_000 and sum(counts.values()) < 40 * N:
            reactor.callLater(0, tick)

    deferred_before = server.service.factory.turns.deferred
    total = 40 * N
    for i in range(total):  # all queued in one transport write by the client
        a.send("message", {"content": f"m{i}"})
    reactor.callLater(0, tick)
    got = [(await b.expect("message", timeout=20))["data"]["content"] for _ in range(total)]
    assert got == [f"m{i}" for i in range(total)]
    await b.quiet(0.2)
    assert server.service.factory.turns.deferred > deferred_before
    between = {n for n in seen if 0 < n < total}
    assert len(between) >= total // N // 4, seen[:50]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_flooder_does_not_hold_up_another_connection(server, monkeypatch):
    """A connection that sent thousands of frames in one go does not make another wait for them
    all: the other's ping is handled while most of the flood is still unhandled."""
    from anygle.protocol import AnygleProtocol

    server.service.factory.turns.frames_per_turn = N
    flooder, other = await server.client(), await server.client()
    counts: dict[int, int] = {}
    _, counting = _count_handled(AnygleProtocol, counts)
    when_other: list[int] = []  # frames of all connections handled when the other's ping was

    def watching(self, payload, is_binary):
        if self.session is not None and self.session.user_id == other.user_id:
            when_other.append(sum(counts.values()))
        return counting(self, payload, is_binary)

    monkeypatch.setattr(AnygleProtocol, "_receive", watching)
    flood = 3000  # ~51 KB of pings: one read of the server
    for _ in range(flood):
        flooder.send("ping")
    await eventually(lambda: counts, step=0, what="the server started on the flood")
    other.send("ping")
    await other.expect("pong", timeout=20)
    assert when_other and when_other[0] < flood // 2, when_other
    for _ in range(flood):  # and the flood is answered in full, nothing dropped
        await flooder.expect("pong", timeout=20)
    await flooder.quiet(0.2)


@pytest_twisted.ensureDeferred
async def test_flood_of_bad_frames_then_close_keeps_order(server):
    """Malformed frames beyond the error budget: errors in order, then TOO_MANY_ERRORS and 1008."""
    server.service.factory.turns.frames_per_turn = 4
    c = await server.client()
    for _ in range(200):
        c.send_raw(b"\xc1not msgpack", binary=True)
    for _ in range(20):
        await c.error("BAD_FRAME")
    await c.error("TOO_MANY_ERRORS")
    await c.closed
    assert c.close_code == 1008


@pytest_twisted.ensureDeferred
async def test_health_and_metrics_report_reactor_lag(server):
    await eventually(lambda: server.service.lag.count >= 1, what="a lag sample")
    code, _, body = await get(server.http_port, "/health")
    data = json.loads(body)
    assert code == 200 and data["status"] == "ok"
    assert isinstance(data["reactorLagMs"], float) and data["reactorLagMs"] >= 0
    assert server.service.lag.count >= 1
    code, _, body = await get(server.http_port, "/metrics")
    text = body.decode()
    assert code == 200
    assert 'anygle_reactor_lag_seconds_bucket{le="+Inf"}' in text
    assert "anygle_reactor_lag_seconds_count" in text
    assert "anygle_reactor_lag_max_seconds" in text
    assert "anygle_fair_turn_waits_total" in text


def test_reactor_lag_records_lateness():
    clock = task.Clock()
    lag = ReactorLag(clock, interval=0.1, window=10.0)
    lag.startService()
    clock.advance(0.1)  # on time
    assert lag.count == 1 and lag.max == 0.0
    clock.advance(0.1 + 0.7)  # the next tick fires 0.7 s late
    assert lag.count == 2 and lag.max == pytest.approx(0.7)
    assert lag.recent_max() == pytest.approx(0.7)
    buckets = dict(lag.cumulative())
    assert buckets["+Inf"] == 2 and buckets[str(BUCKETS[0])] == 1 and buckets["1.0"] == 2
    clock.rightNow += 0.1 + 0.05  # the reactor is stuck: the timer is due and has not fired
    assert lag.overdue() == pytest.approx(0.05)  # a stall shows while it lasts
    assert lag.recent_max() == pytest.approx(0.7)
    clock.advance(0)
    for _ in range(150):  # 15 s on time: the 0.7 s falls out of the window
        clock.advance(0.1)
    assert lag.recent_max() < 0.1 and lag.max == pytest.approx(0.7)
    lag.stopService()
    assert not clock.getDelayedCalls()


def test_backlog_default_and_explicit_backlog_wins():
    n = default_backlog()
    assert n >= 4096
    assert with_backlog("tcp:3001") == f"tcp:3001:backlog={n}"
    assert (
        with_backlog("tcp:3001:interface=127.0.0.1", 77)
        == "tcp:3001:interface=127.0.0.1:backlog=77"
    )
    assert with_backlog("tcp:3001:backlog=10") == "tcp:3001:backlog=10"
    assert with_backlog("tcp:3001:backlog=10:interface=127.0.0.1") == (
        "tcp:3001:backlog=10:interface=127.0.0.1"
    )
    assert with_backlog(r"tcp6:3001:interface=\:\:1", 9) == r"tcp6:3001:interface=\:\:1:backlog=9"
    assert with_backlog("unix:/run/anygle.sock", 5) == "unix:/run/anygle.sock:backlog=5"
    assert with_backlog("systemd:domain=INET:index=0") == "systemd:domain=INET:index=0"


@pytest_twisted.ensureDeferred
async def test_listener_uses_the_backlog(make_server):
    default = await make_server()
    assert default.service.ws.port.backlog == default_backlog()
    explicit = await make_server(ws="tcp:0:interface=127.0.0.1:backlog=123")
    assert explicit.service.ws.port.backlog == 123
