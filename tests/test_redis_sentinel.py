"""Redis Sentinel failover under chat (issue 20, items 1 and 2): a real primary, a real replica
and three real sentinels; two instances with chatting pairs (one across the instances, one on a
single instance); then ``kill -9`` of the primary.  The sentinels promote the replica, each
instance follows the new primary by itself, and no chat is ended: every message is delivered in
order or its sender is told ``NOT_DELIVERED``."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from tests.harness import ROOT, RedisServer, eventually, free_port, redis_binary, sleep, wait_for
from tests.wsclient import Client, match

pytestmark = [
    pytest.mark.slow,  # five Redis processes and a failover
    pytest.mark.parametrize("engine_name", ["redis"], indirect=True),
]

RESULT = ROOT / "bench" / "results" / "failover.json"
MASTER = "anygle"
DOWN_AFTER_MS = 1000  # the sentinels' down-after-milliseconds: how soon a dead primary is seen


class Sentinel:
    def __init__(self, primary_port: int) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="anygle-sentinel-"))
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self.proc = subprocess.Popen(
            [redis_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def ask(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), "--raw", *args],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Cluster:
    def __init__(self) -> None:
        self.primary = RedisServer().start()
        self.replica = RedisServer(
            extra=("--replicaof", "127.0.0.1", str(self.primary.port))
        ).start()
        self.sentinels = [Sentinel(self.primary.port) for _ in range(3)]

        def ready() -> bool:  # each sentinel knows the replica and the two other sentinels
            return all(
                str(self.replica.port) in s.ask("SENTINEL", "replicas", MASTER)
                and s.ask("SENTINEL", "sentinels", MASTER).count("runid") == 2
                for s in self.sentinels
            )

        wait_for(ready, 30, "sentinels that know the replica and each other", 0.2)

    @property
    def spec(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def named_primary(self) -> int:
        return int(self.sentinels[0].ask("SENTINEL", "get-master-addr-by-name", MASTER).split()[1])

    def close(self) -> None:
        for s in self.sentinels:
            s.close()
        self.replica.close()
        self.primary.close()


@pytest.fixture
def cluster() -> Any:
    made = Cluster()
    yield made
    made.close()


def messages(client: Client) -> list[str]:
    return [f["data"]["content"] for f in client.received if f["type"] == "message"]


async def chat(a: Client, b: Client, text: str) -> None:
    a.send("message", {"content": text})
    await eventually(lambda: text in messages(b), timeout=10, what=f"{text!r} delivered")


@pytest_twisted.ensureDeferred
async def test_a_failover_keeps_every_chat_and_loses_no_message(make_server, cluster):
    settings = {"engine": "redis", "redis_sentinels": cluster.spec, "redis_master": MASTER}
    one = await make_server(**settings)
    two = await make_server(**settings)
    assert one.engine.primary.port == cluster.primary.port
    a, b = await one.client(), await two.client()  # a pair across the instances
    await match(a, b, interests=["x"])
    c, d = await one.client(), await one.client()  # a pair on one instance
    await match(c, d, interests=["y"])
    await chat(a, b, "before")
    await chat(c, d, "before")

    g = await one.client()  # will join during the outage
    killed_at = reactor.seconds()
    cluster.primary.kill()
    sent: list[str] = []
    down_at = back_at = None  # both instances: first seen unusable, then usable again

    def usable() -> bool:
        return bool(one.engine.health()[0] and two.engine.health()[0])

    for i in range(80):  # 8 s of messages while the sentinels notice and promote
        for sender, tag in ((a, "ab"), (b, "ba"), (c, "cd")):
            sender.send("message", {"content": f"{tag}-{i}"})
        sent.append(str(i))
        if i == 10:
            g.join(interests=["w"])  # the primary is gone: an answer either way, never silence
        await sleep(0.1)
        if down_at is None and not usable():
            down_at = reactor.seconds()
        elif down_at is not None and back_at is None and usable():
            back_at = reactor.seconds()
    if back_at is None:
        await eventually(usable, timeout=40, what="both instances usable again")
        back_at = reactor.seconds()
    assert down_at is not None  # the instances did see the primary go
    assert cluster.named_primary() == cluster.replica.port
    for engine in (one.engine, two.engine):
        assert engine.primary.port == cluster.replica.port
        assert engine.failovers and engine.failovers[-1][2] == f"127.0.0.1:{cluster.replica.port}"

    # no chat ended; every message arrived in order, or its sender was told it did not
    await chat(a, b, "after")
    await chat(b, a, "after")
    await chat(c, d, "after")
    counts = {}
    for receiver, sender, tag in ((b, a, "ab"), (a, b, "ba"), (d, c, "cd")):
        got = [m for m in messages(receiver) if m.startswith(tag)]
        errors = [f["data"]["code"] for f in sender.received if f["type"] == "error"]
        assert set(errors) <= {"NOT_DELIVERED"}, errors
        assert got == sorted(set(got), key=lambda t: int(t.split("-")[1])), got  # in order, once
        assert len(got) + len(errors) == len(sent), (tag, len(got), len(errors))
        counts[tag] = {"delivered": len(got), "notDelivered": len(errors)}
    for client in (a, b, c, d):
        ended = [f for f in client.received if f["type"].startswith("partner_")]
        assert not ended, (client.user_id, ended)

    # the join made during the outage: refused with a clear error, or kept and matched now
    answer = next(f for f in g.received if f["type"] in ("searching", "error"))
    if answer["type"] == "error":
        assert answer["data"]["code"] == "SERVICE_UNAVAILABLE", answer
        g.join(interests=["w"])
    h = await two.client()
    h.join(interests=["w"])
    await eventually(lambda: any(f["type"] == "matched" for f in h.received), what="g meets h")
    assert next(f for f in h.received if f["type"] == "matched")["data"]["partnerId"] == g.user_id
    stats = await one.hub.stats()
    assert stats.in_queue == 0, stats  # no ghost left waiting

    # matching works again, across the instances
    e, f = await one.client(), await two.client()
    matched_from = reactor.seconds()
    await match(e, f, interests=["z"])
    await chat(f, e, "new pair")
    result = {
        "down_after_ms": DOWN_AFTER_MS,
        "unusable_seen_after_kill_s": round(down_at - killed_at, 2),
        "usable_again_after_kill_s": round(back_at - killed_at, 2),
        "new_cross_instance_match_s": round(reactor.seconds() - matched_from, 3),
        "messages_sent_during_failover_per_direction": len(sent),
        "messages": counts,
        "chats_ended": 0,
        "join_during_outage": answer["type"]
        if answer["type"] == "searching"
        else "error " + answer["data"]["code"],
    }
    print(f"\nfailover: {result}")
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    assert back_at - killed_at < 30


@pytest_twisted.ensureDeferred
async def test_a_stop_in_the_middle_of_a_failover_drains_and_ends_in_time(make_server, cluster):
    """Stopped while the primary is dead and no sentinel has promoted the replica yet: its
    users are told and the stop ends within its usual time (it does not wait for Redis)."""
    settings = {"engine": "redis", "redis_sentinels": cluster.spec, "redis_master": MASTER}
    server = await make_server(**settings)
    a, b = await server.client(), await server.client()
    await match(a, b, interests=["x"])
    cluster.primary.kill()
    await eventually(lambda: not server.engine.health()[0], what="the primary seen gone")
    assert cluster.named_primary() == cluster.primary.port  # not promoted yet: mid-failover
    started = reactor.seconds()
    await server.service.stopService()
    took = reactor.seconds() - started
    print(f"\nstop in the middle of a failover: {took:.2f} s")
    assert took < 5, f"the stop took {took:.1f} s"
    await eventually(lambda: a.close_code is not None and b.close_code is not None, what="closed")
