"""/health and /stats over real HTTP."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.web.client import Agent, readBody


async def get(port: int, path: str, method: bytes = b"GET") -> tuple[int, dict, bytes]:
    response = await Agent(reactor).request(method, f"http://127.0.0.1:{port}{path}".encode())
    body = await readBody(response)
    ctype = response.headers.getRawHeaders(b"content-type") or [b""]
    return response.code, {"content-type": ctype[0]}, body


@pytest_twisted.ensureDeferred
async def test_health(server):
    code, headers, body = await get(server.http_port, "/health")
    assert code == 200 and headers["content-type"] == b"application/json"
    data = json.loads(body)
    assert data["status"] == "ok"
    assert data["instanceId"] == server.service.settings.instance_id
    assert data["engine"] == server.service.settings.engine
    assert isinstance(data["uptime"], float) and data["uptime"] >= 0


@pytest_twisted.ensureDeferred
async def test_stats_counts_users_queue_and_chats(server):
    await server.pair()
    waiting = await server.client()
    waiting.join(mode="voice")
    await waiting.expect("searching")
    code, _, body = await get(server.http_port, "/stats")
    assert code == 200
    data = json.loads(body)
    assert data["totalOnline"] == 3
    assert data["inQueue"] == 1
    assert data["activeChats"] == 1
    assert data["totalMatches"] == 1
    assert data["avgMatchTime"] >= 0
    assert data["queues"] == {"adult:voice:moderated": 1}


@pytest_twisted.ensureDeferred
async def test_other_paths_are_json_404_and_methods_405(server):
    for path in ("/", "/nope", "/health/x", "/stats/"):
        code, headers, body = await get(server.http_port, path)
        assert code == 404 and headers["content-type"] == b"application/json", path
        assert json.loads(body)["error"] == "not found"
    code, _, body = await get(server.http_port, "/health", b"POST")
    assert code == 405 and json.loads(body)["error"] == "method not allowed"


@pytest_twisted.ensureDeferred
async def test_metrics_in_prometheus_format(server):
    await server.pair()
    waiting = await server.client()
    waiting.join(mode="voice")
    await waiting.expect("searching")
    code, headers, body = await get(server.http_port, "/metrics")
    assert code == 200 and headers["content-type"].startswith(b"text/plain; version=0.0.4")
    text = body.decode()
    assert "anygle_online_users 3.0" in text
    assert "anygle_active_chats 1.0" in text
    assert 'anygle_queue_users{queue="adult:voice:moderated"} 1.0' in text
    assert "anygle_matches_total 1.0" in text
    instance = server.service.settings.instance_id
    assert f'anygle_instance_connections{{instance="{instance}"}} 3.0' in text
