"""Whole instances (hub + protocol + HTTP) on the redis engine, several in one reactor, real
WebSocket clients: cross-instance chats, /health and /stats, outages as the client sees them."""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from anygle.engine.redis import RedisEngine
from anygle.tap import AnygleService
from tests.conftest import ServerHandle, settings
from tests.harness import RedisServer, eventually
from tests.wsclient import match


@pytest_twisted.async_yield_fixture
async def instances(redis: RedisServer, packaged_rules):
    """``await make(n)`` -> n running instances on the redis engine."""
    started: list[ServerHandle] = []

    async def make(n: int, **overrides: Any) -> list[ServerHandle]:
        handles = []
        for _ in range(n):
            overrides.update(engine="redis", redis=redis.url, instance_id=f"inst{len(started)}")
            service = AnygleService(settings(**overrides), reactor, classifier=packaged_rules)
            service.startService()
            assert isinstance(service.engine, RedisEngine)
            await service.engine.when_ready(10)
            handle = ServerHandle(service)
            started.append(handle)
            handles.append(handle)
        return handles

    yield make
    for handle in started:
        await handle.stop()


async def get_json(port: int, path: str) -> tuple[int, dict]:
    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    return response.code, json.loads(await readBody(response))


@pytest_twisted.ensureDeferred
async def test_partners_on_two_instances_chat_both_ways_in_order(instances):
    one, two = await instances(2)
    a = await one.client()
    b = await two.client()
    a.join(interests=["cats"])
    await a.expect("searching")
    b.join(interests=["cats", "dogs"])
    ma, mb = await a.expect("matched"), await b.expect("matched")
    assert ma["data"]["roomId"] == mb["data"]["roomId"]
    assert ma["data"]["partnerId"] == b.user_id and mb["data"]["partnerId"] == a.user_id
    assert ma["data"]["isInitiator"] and not mb["data"]["isInitiator"]
    assert mb["data"]["partnerInfo"] == {"interests": ["cats"], "sharedInterests": ["cats"]}
    for i in range(50):
        a.send("message", {"content": f"a{i}"})
        b.send("message", {"content": f"b{i}"})
    got_b = [(await b.expect("message"))["data"]["content"] for _ in range(50)]
    got_a = [(await a.expect("message"))["data"]["content"] for _ in range(50)]
    assert got_b == [f"a{i}" for i in range(50)]
    assert got_a == [f"b{i}" for i in range(50)]
    a.send("typing", {"isTyping": True})
    assert (await b.expect("partner_typing"))["data"] == {"isTyping": True}
    a.send("skip")
    await b.expect("partner_skipped")
    await a.close()
    await b.quiet(0.3)


@pytest_twisted.ensureDeferred
async def test_disconnect_on_other_instance_and_global_stats(instances):
    one, two, three = await instances(3)
    a = await one.client()
    b = await two.client()
    c = await three.client()
    await match(a, b)
    c.join(interests=["x"], interestsOnly=True)
    await c.expect("searching")
    for h in (one, two, three):
        code, body = await get_json(h.http_port, "/stats")
        assert code == 200
        assert (body["totalOnline"], body["activeChats"], body["inQueue"]) == (3, 1, 1)
        assert body["totalMatches"] == 1
    await b.close()
    await a.expect("partner_disconnected")
    code, body = await get_json(three.http_port, "/stats")
    assert (body["totalOnline"], body["activeChats"]) == (2, 0)


@pytest_twisted.ensureDeferred
async def test_outage_health_503_service_unavailable_and_recovery(instances, redis):
    (one,) = await instances(1)
    a, b = await one.pair()
    c = await one.client()
    code, body = await get_json(one.http_port, "/health")
    assert code == 200 and body["status"] == "ok"
    redis.kill()
    await eventually(lambda: not one.engine.health()[0], what="outage noticed")
    code, body = await get_json(one.http_port, "/health")
    assert code == 503 and body["reason"].startswith("redis unavailable")
    c.join()
    await c.error("SERVICE_UNAVAILABLE")
    # the local chat goes on
    a.send("message", {"content": "still here"})
    assert (await b.expect("message"))["data"]["content"] == "still here"
    redis.start()
    await eventually(lambda: one.engine.health()[0], timeout=5, what="back within 5 s")
    c.join()
    await c.expect("searching")
    d = await one.client()
    d.join()
    await d.expect("matched")
    b.send("message", {"content": "after"})
    assert (await a.expect("message"))["data"]["content"] == "after"


@pytest_twisted.ensureDeferred
async def test_banned_ip_is_refused_on_every_instance(instances, redis):
    _one, two = await instances(2)
    redis.command("SET", "banned:ips:127.0.0.1", "testing")
    from tests.wsclient import Client

    c = await Client.connect(two.ws_port, wait_connected=False)
    frame = await c.expect("error")
    assert frame["data"]["code"] == "BANNED"
