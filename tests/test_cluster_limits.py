"""Abuse limits, bans and drain across real instances sharing a real Redis (and a real nginx)."""

from __future__ import annotations

import json
import signal

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.harness import Cluster, eventually
from tests.wsclient import Client, Closed

pytestmark = pytest.mark.slow  # real processes: not in the fast loop


@pytest.fixture
def two():
    c = Cluster(2, nginx=False, extra=["--max-connections-per-ip=5", "--rate-limit=12"]).start()
    yield c
    c.stop()


def conns(cluster: Cluster) -> int:
    """Open connections from 127.0.0.1 over all instances (``conns:{ip}``)."""
    return int(cluster.redis.command("GET", "conns:127.0.0.1") or 0)


def user_ip(cluster: Cluster, user_id: str) -> str:
    return json.loads(cluster.redis.command("GET", f"user:{user_id}"))["ip"]


@pytest_twisted.ensureDeferred
async def test_connection_cap_and_handshake_rate_are_shared_by_instances(two: Cluster):
    n1, n2 = two.instances
    clients = [await Client.connect(n1.ws_port) for _ in range(3)]
    clients += [await Client.connect(n2.ws_port) for _ in range(2)]
    for port in (n1.ws_port, n2.ws_port):  # the 6th, on either instance
        sixth = await Client.connect(port, wait_connected=False)
        assert (await sixth.next())["data"]["code"] == "TOO_MANY_CONNECTIONS"
        await sixth.closed
    await clients[0].close()
    await eventually(lambda: conns(two) == 4, what="the slot given back")
    clients[0] = await Client.connect(n2.ws_port)  # a freed slot is free everywhere
    # 5 + 2 + 1 handshakes so far; the budget is 12 per minute for both instances together
    for port in (n1.ws_port, n2.ws_port, n1.ws_port, n2.ws_port):
        extra = await Client.connect(port, wait_connected=False)
        await extra.next()
        await extra.closed
    with pytest.raises(Closed, match="429"):
        await Client.connect(n1.ws_port, wait_connected=False)
    with pytest.raises(Closed, match="429"):
        await Client.connect(n2.ws_port, wait_connected=False)
    for c in clients:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_connection_counts_of_a_killed_instance_are_reaped(two: Cluster):
    n1, n2 = two.instances
    doomed = [await Client.connect(n1.ws_port) for _ in range(5)]
    refused = await Client.connect(n2.ws_port, wait_connected=False)
    assert (await refused.next())["data"]["code"] == "TOO_MANY_CONNECTIONS"
    n1.kill()
    for c in doomed:
        with pytest.raises(Closed):
            await c.next(5)
    # lease expiry + reaper: node1's connections are given back
    await eventually(lambda: conns(two) == 0, timeout=10, what="node1 reaped")
    ok = [await Client.connect(n2.ws_port) for _ in range(5)]
    assert all(c.user_id for c in ok)
    for c in ok:
        await c.close()


@pytest_twisted.ensureDeferred
async def test_redis_cli_ban_kicks_a_connected_user_within_a_second():
    cluster = Cluster(2, nginx=False).start()
    try:
        n1, n2 = cluster.instances
        a = await Client.connect(n1.ws_port)
        b = await Client.connect(n2.ws_port)
        a.join(interests=["ban"], interestsOnly=True)
        await a.expect("searching")
        b.join(interests=["ban"], interestsOnly=True)
        await a.expect("matched")
        await b.expect("matched")
        out = await threads.deferToThread(
            cluster.redis.client, "SETEX", f"banned:users:{a.user_id}", 86400, "Harassment"
        )
        assert out == "OK"
        err = await a.expect("error", timeout=1.5)  # polled every second
        assert err["data"]["code"] == "BANNED" and "Harassment" in err["data"]["message"]
        await a.closed
        assert a.close_code == 1008
        await b.expect("partner_disconnected")
        # a ban by IP, on the other instance
        await threads.deferToThread(
            cluster.redis.client, "SETEX", "banned:ips:127.0.0.1", 86400, "Spam"
        )
        assert (await b.expect("error", timeout=3))["data"]["code"] == "BANNED"
        await b.closed
    finally:
        cluster.stop()


@pytest_twisted.ensureDeferred
async def test_forwarded_for_through_real_nginx_carries_the_client_address():
    cluster = Cluster(1, nginx=True, extra=["--trusted-proxies=127.0.0.1/32"]).start()
    try:
        assert cluster.port is not None  # the cluster has nginx
        # nginx connects to the instance from 127.0.0.1 (trusted) and appends the real peer
        honest = await Client.connect(cluster.port, bind="127.0.0.3")
        assert honest.user_id is not None  # connect() waits for ``connected``
        ip = await threads.deferToThread(user_ip, cluster, honest.user_id)
        assert ip == "127.0.0.3"
        await threads.deferToThread(cluster.redis.client, "SET", "banned:ips:127.0.0.2", "Spam")
        # a forged header does not hide 127.0.0.2: nginx appends the real address after it
        forged = await Client.connect(
            cluster.port,
            bind="127.0.0.2",
            headers={"X-Forwarded-For": "198.51.100.7"},
            wait_connected=False,
        )
        frame = await forged.next()
        assert frame["data"]["code"] == "BANNED" and "Spam" in frame["data"]["message"]
        await forged.closed
        # straight to the instance, from an address that is not a trusted proxy, the same
        # forged header is ignored
        direct = await Client.connect(
            cluster.instances[0].ws_port,
            bind="127.0.0.4",
            headers={"X-Forwarded-For": "127.0.0.2"},
        )
        assert direct.user_id is not None
        assert await threads.deferToThread(user_ip, cluster, direct.user_id) == "127.0.0.4"
        await honest.close()
        await direct.close()
    finally:
        cluster.stop()


@pytest_twisted.ensureDeferred
async def test_sigterm_under_load_leaves_nothing_behind_in_redis():
    cluster = Cluster(2, nginx=False).start()
    try:
        n1, n2 = cluster.instances
        local = [await Client.connect(n1.ws_port) for _ in range(30)]
        remote = [await Client.connect(n2.ws_port) for _ in range(10)]
        for i, (a, b) in enumerate(zip(local[:10], remote, strict=True)):  # cross-instance
            a.join(interests=[f"pair{i}"], interestsOnly=True)
            await a.expect("searching")
            b.join(interests=[f"pair{i}"], interestsOnly=True)
            await a.expect("matched")
            await b.expect("matched")
        for i in range(10, 20, 2):  # same-instance chats
            local[i].join(interests=[f"local{i}"], interestsOnly=True)
            await local[i].expect("searching")
            local[i + 1].join(interests=[f"local{i}"], interestsOnly=True)
            await local[i].expect("matched")
        for i, c in enumerate(local[20:]):  # waiting
            c.join(interests=[f"nobody{i}"], interestsOnly=True)
            await c.expect("searching")
        for a in local[:10]:
            a.send("message", {"content": "still typing"})
        n1.signal(signal.SIGTERM)
        for c in local:
            with pytest.raises(Closed):
                while True:
                    await c.next(12)
        # gone within 10 s (shutdown-timeout is 8 s)
        assert n1.proc is not None  # started
        code = await threads.deferToThread(n1.proc.wait, 10)
        assert code == -signal.SIGTERM
        assert {c.close_code for c in local} == {1001}
        for b in remote:  # a message sent just before the stop may or may not make it first
            frame = await b.expect("message", "partner_disconnected", timeout=5)
            if frame["type"] == "message":
                await b.expect("partner_disconnected", timeout=5)
        stats = json.loads(await threads.deferToThread(_http_stats, n2.http_port))
        assert (stats["totalOnline"], stats["inQueue"], stats["activeChats"]) == (10, 0, 0)
        keys = await threads.deferToThread(cluster.redis.command, "KEYS", "queue:*")
        queue_keys = [k for k in keys if k.count(b":") == 3]  # queue:{cat}:{mode}:{type}
        queued = [
            m
            for k in queue_keys
            for m in await threads.deferToThread(cluster.redis.command, "ZRANGE", k, 0, -1)
        ]
        assert queued == []
        assert (
            await threads.deferToThread(cluster.redis.command, "SCARD", "instance:node1:users") == 0
        )
    finally:
        cluster.stop()


def _http_stats(port: int) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as r:
        return r.read()
