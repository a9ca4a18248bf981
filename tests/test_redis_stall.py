"""Busy is not dead, and Redis restarts end no chat: real ``twistd`` processes on one redis-server.

* one instance frozen 3 s (``SIGSTOP`` … ``SIGCONT``) while its users chat with users of the other:
  no chat ends, every message arrives, in order, once;
* ``kill -9`` of an instance: its users' partners are told within 5 s;
* the redis-server restarted empty under traffic: chats on one instance and across two go on,
  nothing is lost silently (every message arrives, or its sender got ``NOT_DELIVERED``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.request
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from tests.harness import Cluster, eventually, sleep
from tests.wsclient import Client, match

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

ENDS = ("partner_disconnected", "partner_skipped")


@pytest.fixture
def two():
    c = Cluster(2, nginx=False).start()
    yield c
    c.stop()


async def pairs(cluster: Cluster, spec: list[tuple[int, int]]) -> list[tuple[Client, Client]]:
    """One matched pair per ``(instance of a, instance of b)`` in ``spec``."""
    out = []
    for k, (i, j) in enumerate(spec):
        a = await Client.connect(cluster.instances[i].ws_port)
        b = await Client.connect(cluster.instances[j].ws_port)
        await match(a, b, interests=[f"pair{k}"], interestsOnly=True)
        out.append((a, b))
    return out


class Traffic:
    """Every client sends ``message {content: "<n>"}`` every ``period`` s until stopped."""

    def __init__(self, chats: list[tuple[Client, Client]], period: float = 0.05) -> None:
        self.clients = [c for ab in chats for c in ab]
        self.sent = {id(c): 0 for c in self.clients}
        self.loop = task.LoopingCall(self._tick)
        self.period = period

    def start(self) -> None:
        self.loop.start(self.period)

    def stop(self) -> None:
        self.loop.stop()

    def _tick(self) -> None:
        for c in self.clients:
            c.send("message", {"content": str(self.sent[id(c)])})
            self.sent[id(c)] += 1


def received_numbers(c: Client) -> list[int]:
    return [int(f["data"]["content"]) for f in c.received if f["type"] == "message"]


def ended(c: Client) -> list[dict[str, Any]]:
    return [f for f in c.received if f["type"] in ENDS]


def errors(c: Client, code: str | None = None) -> list[dict[str, Any]]:
    return [
        f
        for f in c.received
        if f["type"] == "error" and (code is None or f["data"]["code"] == code)
    ]


async def settle(chats: list[tuple[Client, Client]], traffic: Traffic, timeout: float) -> None:
    """Wait until every receiver has every message, or its sender errors account for it (on
    time out, :func:`check_delivery` says what is missing)."""

    def done() -> bool:
        return all(
            len(received_numbers(b)) + len(errors(a, "NOT_DELIVERED")) >= traffic.sent[id(a)]
            and len(received_numbers(a)) + len(errors(b, "NOT_DELIVERED")) >= traffic.sent[id(b)]
            for a, b in chats
        )

    with contextlib.suppress(AssertionError):
        await eventually(done, timeout, step=0.1)


def check_delivery(chats: list[tuple[Client, Client]], traffic: Traffic) -> dict[str, int]:
    """In order, never twice, and nothing missing that its sender was not told about."""
    totals = {"sent": 0, "delivered": 0, "not_delivered": 0}
    for a, b in chats:
        for sender, receiver in ((a, b), (b, a)):
            got = received_numbers(receiver)
            assert got == sorted(set(got)), f"reordered or duplicated: {got[:50]}"
            told = len(errors(sender, "NOT_DELIVERED"))
            missing = traffic.sent[id(sender)] - len(got)
            assert missing == told, (
                chats.index((a, b)),
                traffic.sent[id(sender)],
                sorted(set(range(traffic.sent[id(sender)])) - set(got)),
                told,
                [f for f in sender.received if f["type"] not in ("message", "matched")],
            )
            totals["sent"] += traffic.sent[id(sender)]
            totals["delivered"] += len(got)
            totals["not_delivered"] += told
    return totals


async def wind_down(
    chats: list[tuple[Client, Client]], traffic: Traffic, chatting_on: float
) -> dict[str, int]:
    """Chat on for ``chatting_on`` s, stop the traffic and let it arrive: no chat has ended, and
    :func:`check_delivery` holds (its totals returned)."""
    await sleep(chatting_on)
    traffic.stop()
    await settle(chats, traffic, 15.0)
    for a, b in chats:
        assert not ended(a) and not ended(b), (ended(a), ended(b))
    return check_delivery(chats, traffic)


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return json.loads(r.read())


@pytest_twisted.ensureDeferred
async def test_an_instance_stopped_3_s_keeps_every_chat(two: Cluster):
    n1, n2 = two.instances
    # 12 pairs across the two instances, 3 on the frozen one only, 3 on the other only
    chats = await pairs(two, [(0, 1)] * 12 + [(0, 0)] * 3 + [(1, 1)] * 3)
    epoch = two.redis.command("HGET", "instances:epoch", "node1")
    assert epoch
    traffic = Traffic(chats)
    traffic.start()
    await sleep(1.0)  # chatting
    assert n1.proc is not None
    os.kill(n1.proc.pid, signal.SIGSTOP)
    stopped = reactor.seconds()
    try:
        await sleep(3.0)  # frozen 3 s
        suspected = two.redis.command("HEXISTS", "instances:suspect", "node1")
    finally:
        os.kill(n1.proc.pid, signal.SIGCONT)
    frozen = reactor.seconds() - stopped
    totals = await wind_down(chats, traffic, chatting_on=1.5)  # after the thaw
    for a, b in chats:
        assert not errors(a) and not errors(b), (errors(a), errors(b))
    assert totals["not_delivered"] == 0
    # the same registration all along: never reaped, never registered again
    assert two.redis.command("HGET", "instances:epoch", "node1") == epoch
    assert two.redis.command("HEXISTS", "instances:suspect", "node1") == 0
    assert (await threads.deferToThread(health, n1.http_port))[0] == 200
    s = await threads.deferToThread(stats, n2.http_port)
    assert (s["totalOnline"], s["activeChats"]) == (36, 18)
    print(f"\nSIGSTOP {frozen:.2f} s (suspected at 3 s: {bool(suspected)}): {totals}")
    for c in traffic.clients:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_kill_9_partners_told_within_5_s(two: Cluster):
    _n1, n2 = two.instances
    chats = await pairs(two, [(0, 1)] * 5)
    n2.kill()
    start = reactor.seconds()
    for a, _b in chats:
        await a.expect("partner_disconnected", timeout=6)
    took = reactor.seconds() - start
    print(f"\nkill -9: all 5 partners told after {took:.2f} s")
    assert took < 5
    assert two.redis.command("SISMEMBER", "instances", "node2") == 0
    for a, _b in chats:
        await a.close()


@pytest_twisted.ensureDeferred
async def test_redis_restarted_empty_under_traffic_ends_no_chat(two: Cluster):
    n1, n2 = two.instances
    chats = await pairs(two, [(0, 1)] * 10 + [(0, 0)] * 4 + [(1, 1)] * 4)
    traffic = Traffic(chats)
    traffic.start()
    await sleep(1.0)  # chatting
    await threads.deferToThread(two.redis.kill)
    down = reactor.seconds()
    await sleep(1.0)  # the outage lasts, under traffic
    await threads.deferToThread(two.redis.start)
    back = reactor.seconds()

    async def both_healthy() -> bool:
        codes = [(await threads.deferToThread(health, i.http_port))[0] for i in (n1, n2)]
        return codes == [200, 200]

    await eventually(both_healthy, timeout=6, step=0.1, what="both healthy again within 6 s")
    recovered = reactor.seconds() - back
    totals = await wind_down(chats, traffic, chatting_on=2.0)  # after the restart
    s = await threads.deferToThread(stats, n1.http_port)
    assert (s["totalOnline"], s["activeChats"]) == (36, 18)
    print(
        f"\nRedis down {back - down:.2f} s, both instances healthy {recovered:.2f} s after it "
        f"came back: {totals}"
    )
    # the rooms are real again: a skip across instances reaches the partner
    a, b = chats[0]
    a.send("skip")
    await b.expect("partner_skipped", "message", timeout=5)
    await defer.gatherResults([defer.ensureDeferred(c.close()) for c in traffic.clients])
