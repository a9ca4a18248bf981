"""Integration: a real redis-server, three ``twistd anygle --engine redis`` processes and a real
nginx in front (config written on free ports).  Clients go through nginx."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from functools import partial

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from tests.harness import Cluster, eventually, http_status, sleep
from tests.wsclient import Client, match

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

# No skip when nginx is missing: .ci/install installs it, and a missing nginx must fail loudly.


@pytest.fixture
def cluster():
    c = Cluster(3).start()
    yield c
    c.stop()


async def connect_spread(cluster: Cluster, n: int) -> dict[str, list[Client]]:
    """``n`` clients through nginx, grouped by the instance they landed on."""
    by_instance: dict[str, list[Client]] = {}
    assert cluster.port is not None  # the cluster has nginx
    for _ in range(n):
        c = await Client.connect(cluster.port)
        assert c.user_id is not None  # connect() waits for ``connected``
        inst = await threads.deferToThread(cluster.instance_of, c.user_id)
        assert inst is not None, f"{c.user_id} has no user: key"
        by_instance.setdefault(inst, []).append(c)
    return by_instance


async def chat(a: Client, b: Client, n: int = 30) -> None:
    for i in range(n):
        a.send("message", {"content": f"a{i}"})
        b.send("message", {"content": f"b{i}"})
    assert [(await b.expect("message"))["data"]["content"] for _ in range(n)] == [
        f"a{i}" for i in range(n)
    ]
    assert [(await a.expect("message"))["data"]["content"] for _ in range(n)] == [
        f"b{i}" for i in range(n)
    ]


async def health_is(port: int, code: int) -> bool:
    return await threads.deferToThread(http_status, port) == code


def http_get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest_twisted.ensureDeferred
async def test_through_nginx_cross_instance_chat_and_kill_9(cluster: Cluster):
    assert cluster.port is not None  # the cluster has nginx
    groups = await connect_spread(cluster, 9)
    assert sorted(groups) == ["node1", "node2", "node3"]  # least_conn spreads them
    n1, n2, n3 = groups["node1"], groups["node2"], groups["node3"]
    # two cross-instance chats whose second partner is on node3, one node1-node2 chat
    await match(n1[0], n3[0], interests=["k1"], interestsOnly=True)
    await match(n2[0], n3[1], interests=["k2"], interestsOnly=True)
    await match(n1[1], n2[1], interests=["k3"], interestsOnly=True)
    await chat(n1[0], n3[0])
    await chat(n1[1], n2[1])
    # a node3 user waits for a rare interest: after the kill nobody may get them
    n3[2].join(interests=["ghost"], interestsOnly=True)
    await n3[2].expect("searching")
    code, stats = await threads.deferToThread(http_get, cluster.port, "/stats")
    assert (stats["totalOnline"], stats["activeChats"], stats["inQueue"]) == (9, 3, 1)

    cluster.instances[2].kill()
    start = reactor.seconds()
    await n1[0].expect("partner_disconnected", timeout=6)
    await n2[0].expect("partner_disconnected", timeout=6)
    assert reactor.seconds() - start < 5
    # the chat between survivors is untouched
    await chat(n1[1], n2[1], 5)
    # no ghost: the dead instance's waiting user is gone from the queue
    n1[2].join(interests=["ghost"], interestsOnly=True)
    await n1[2].expect("searching")
    await n1[2].quiet(1.0)
    code, stats = await threads.deferToThread(http_get, cluster.port, "/stats")
    assert code == 200
    assert (stats["totalOnline"], stats["activeChats"], stats["inQueue"]) == (6, 1, 1)
    # survivors find each other again
    n1[0].join()
    await n1[0].expect("searching")
    n2[0].join()
    await n1[0].expect("matched")
    await n2[0].expect("matched")
    for c in n1 + n2:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_redis_killed_and_restarted(cluster: Cluster):
    assert cluster.port is not None  # the cluster has nginx
    groups = await connect_spread(cluster, 6)
    n1, n2 = groups["node1"], groups["node2"]
    await match(n1[0], n1[1], interests=["same"], interestsOnly=True)  # same instance
    cross = (n2[0], groups["node3"][0])
    await match(*cross, interests=["x"], interestsOnly=True)
    for inst in cluster.instances:  # each instance reads (and keeps) totalMatches (2)
        code, stats = await threads.deferToThread(http_get, inst.http_port, "/stats")
        assert (code, stats["totalMatches"]) == (200, 2)
    await threads.deferToThread(cluster.redis.kill)
    for inst in cluster.instances:
        await eventually(
            partial(health_is, inst.http_port, 503), what=f"{inst.name} reports the outage"
        )
        code, body = await threads.deferToThread(http_get, inst.http_port, "/health")
        assert code == 503 and body["reason"].startswith("redis unavailable"), body
    # the same-instance chat goes on through the outage
    await chat(n1[0], n1[1], 10)
    n2[1].join()
    await n2[1].error("SERVICE_UNAVAILABLE")
    await sleep(1.0)  # the outage lasts
    await chat(n1[0], n1[1], 10)

    await threads.deferToThread(cluster.redis.start)
    start = reactor.seconds()
    # matching works again within 5 s: a pair of fresh users on two instances
    a, b = n2[1], groups["node3"][1]

    async def join_accepted(c: Client) -> None:
        while True:
            c.join(interests=["back"], interestsOnly=True)
            frame = await c.expect("searching", "matched", "error")
            if frame["type"] != "error":
                return
            assert frame["data"]["code"] == "SERVICE_UNAVAILABLE", frame
            assert reactor.seconds() - start < 5, frame
            await sleep(0.1)  # and ask again

    await join_accepted(a)
    await join_accepted(b)
    await a.expect("matched")
    if not b.received or b.received[-1]["type"] != "matched":
        await b.expect("matched")
    assert reactor.seconds() - start < 5
    await chat(a, b, 5)
    await chat(n1[0], n1[1], 5)  # never broke
    # the chat across instances survives Redis losing its data too: both instances restored it
    await chat(*cross, 5)
    for inst in cluster.instances:  # every instance is back within 5 s (backoff tops at 2 s)
        left = 5 - (reactor.seconds() - start)
        await eventually(partial(health_is, inst.http_port, 200), timeout=left)
    # the global figures were rebuilt: 6 online, the local chat and the new one
    code, stats = await threads.deferToThread(http_get, cluster.port, "/stats")
    assert (stats["totalOnline"], stats["activeChats"]) == (6, 3)
    assert stats["totalMatches"] == 3  # restored from the instances after Redis lost it
