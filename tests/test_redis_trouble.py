"""Redis trouble an operator can diagnose (issue 20, item 6): a bad ``--redis`` is one line at
start-up (tests/test_config.py); with Redis unreachable or refusing the password, ``/health``
and ``/stats`` name the address and the cause, the log says it once instead of a traceback
per request or push, and clients are answered at once instead of after the start-up wait."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from zope.interface import provider

from anygle.engine.base import EngineConfig, EngineUnavailable
from anygle.engine.redis import RedisEngine
from anygle.model import Preferences
from anygle.tap import AnygleService
from tests.conftest import ServerHandle, Sink, settings
from tests.harness import RedisServer, eventually, free_port, sleep
from tests.test_http import get
from tests.wsclient import Client


@pytest_twisted.ensureDeferred
async def test_nothing_listening_is_said_with_the_address_and_answered_at_once():
    port = free_port()
    engine = RedisEngine(
        EngineConfig(instance_id="down", redis_url=f"redis://127.0.0.1:{port}/0"), reactor
    )
    started_at = reactor.seconds()
    await engine.start(Sink())  # gives up waiting when the first attempt is refused
    try:
        assert reactor.seconds() - started_at < engine.startup_wait / 2
        ok, reason = engine.health()
        assert not ok
        assert (
            reason == f"redis unavailable: cannot connect to 127.0.0.1:{port}: connection refused"
        )
        await engine.connect("u", "10.0.0.1")  # applied locally, registered when Redis is back
        asked_at = reactor.seconds()
        prefs = Preferences("adult", "text", "moderated", (), False)
        with pytest.raises(EngineUnavailable, match="connection refused"):
            await engine.join("u", prefs, reactor.seconds())
        assert reactor.seconds() - asked_at < 1.0  # at once, not after the start-up wait
    finally:
        await engine.stop()


@pytest_twisted.ensureDeferred
async def test_a_refused_password_is_the_health_reason(redis: RedisServer):
    url = redis.url.replace("redis://", "redis://:not-the-password@")
    engine = RedisEngine(EngineConfig(instance_id="pw", redis_url=url), reactor)
    await engine.start(Sink())
    try:
        await eventually(lambda: "could not auth" in engine.health()[1], what="the auth failure")
        reason = engine.health()[1]
        assert f"at 127.0.0.1:{redis.port}" in reason and "not-the-password" not in reason
    finally:
        await engine.stop()


@pytest_twisted.ensureDeferred
async def test_a_server_without_redis_answers_at_once_and_logs_no_tracebacks(packaged_rules):
    port = free_port()
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    service = AnygleService(
        settings(
            engine="redis",
            redis=f"redis://127.0.0.1:{port}/0",
            instance_id="down",
            stats_interval=0.2,
            searching_interval=0.2,
        ),
        reactor,
        None,
        packaged_rules,
    )
    service.startService()
    server = ServerHandle(service)
    try:
        await eventually(lambda: "refused" in service.engine.health()[1], what="refused")
        asked_at = reactor.seconds()
        client = await Client.connect(server.ws_port)
        server.clients.append(client)
        assert reactor.seconds() - asked_at < 2.0  # not after the 5 s start-up wait
        client.join()
        frame = await client.expect("error", timeout=1.0)
        assert frame["data"]["code"] == "SERVICE_UNAVAILABLE"
        why = f"redis unavailable: cannot connect to 127.0.0.1:{port}: connection refused"
        for path in ("/health", "/stats"):
            code, _, body = await get(server.http_port, path)
            assert code == 503 and json.loads(body)["reason"] == why, (path, body)
        _, _, body = await get(server.http_port, "/health")
        assert json.loads(body)["redis"] == {"address": f"127.0.0.1:{port}", "tls": False}
        await sleep(1.0)  # five stats pushes (each asks the engine)
    finally:
        globalLogPublisher.removeObserver(observe)
        await server.stop()
    bad = [e for e in events if e.get("log_level") in (LogLevel.critical, LogLevel.error)]
    assert not bad, [e.get("log_format") for e in bad]
    warnings = [e for e in events if "cannot connect" in str(e.get("cause", ""))]
    assert len(warnings) == 1, warnings  # said once (again after a minute if it goes on)


def test_a_redis_still_loading_is_an_outage_not_a_refused_login():
    """Start-up stops on a login Redis refuses, not on a Redis that is busy for a while."""
    from anygle.engine.redis.blocking import is_passing

    assert is_passing("LOADING Redis is loading the dataset in memory")
    assert is_passing("BUSY Redis is busy running a script.")
    assert is_passing("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is no")
    for refused in (
        "WRONGPASS invalid username-password pair or user is disabled.",
        "NOAUTH Authentication required.",
        "NOPERM this user has no permissions to run the 'ping' command",
        "ERR DB index is out of range",
    ):
        assert not is_passing(refused)
