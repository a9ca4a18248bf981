"""Shared fixtures: real servers on port 0, real WebSocket clients over loopback.

Every async test must be decorated (``@pytest_twisted.ensureDeferred``); an undecorated coroutine
test is turned into a failure below instead of passing without running.

Tests that take a second or more (real processes, Hyperscan compiles, long property runs) are
marked ``slow``: ``pytest -m "not slow"`` is the everyday loop.  An unmarked test that took
longer than :data:`SLOW` to run is named at the end of the run, so the loop stays fast.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgpack
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from anygle.config import Settings
from anygle.engine.base import EngineConfig
from anygle.engine.redis import RedisEngine
from anygle.model import Match, Preferences
from anygle.moderation import Classifier
from anygle.tap import AnygleService
from tests.harness import RedisServer, eventually, limits_off_settings, sleep
from tests.wsclient import Client, match

ENGINES = ["memory", "redis"]
SLOW = 1.5  # seconds (the call) above which an unmarked test is named
_unmarked_slow: dict[str, float] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fn = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(fn) and not hasattr(fn, "_pytest_twisted_mark"):
            raise pytest.UsageError(
                f"{item.nodeid} is an undecorated async test: use @pytest_twisted.ensureDeferred"
            )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # the call only: a setup may load what a whole module or session then shares
    if report.when == "call" and "slow" not in report.keywords:
        _unmarked_slow[report.nodeid] = _unmarked_slow.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    slow = {k: v for k, v in _unmarked_slow.items() if v > SLOW}
    if slow:
        terminalreporter.section("unmarked slow tests: mark them @pytest.mark.slow")
        for nodeid, seconds in sorted(slow.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")


class ServerHandle:
    """A running Anygle instance in the test's reactor."""

    def __init__(self, service: AnygleService) -> None:
        self.service = service
        self.clients: list[Client] = []

    @property
    def hub(self):
        return self.service.hub

    @property
    def engine(self):
        return self.service.engine

    @property
    def ws_port(self) -> int:
        return self.service.ws.port.getHost().port

    @property
    def http_port(self) -> int:
        return self.service.http.port.getHost().port

    async def client(self, **kwargs: Any) -> Client:
        c = await Client.connect(self.ws_port, **kwargs)
        self.clients.append(c)
        return c

    async def pair(self, **join: Any) -> tuple[Client, Client]:
        """Two clients matched with each other (``a`` waited first and is the initiator)."""
        a, b = await self.client(), await self.client()
        await match(a, b, **join)
        return a, b

    async def stop(self) -> None:
        for c in self.clients:
            await c.close()
        await self.service.stopService()
        await eventually(lambda: not self.service.factory.connections, what="connections closed")


def settings(engine: str = "memory", **overrides: Any) -> Settings:
    """Settings for an instance in the test's reactor: loopback ports picked by the system, the
    abuse limits and periodic pushes off (:data:`tests.harness.LIMITS_OFF`), then ``overrides``."""
    base = Settings(
        ws="tcp:0:interface=127.0.0.1",
        http="tcp:0:interface=127.0.0.1",
        engine=engine,
        instance_id="test",
        **limits_off_settings(),
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture(scope="session")
def redis_server():
    """One throw-away redis-server for the session; each test starts from FLUSHALL."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The session's redis-server, running (tests may kill it) and empty."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.command("FLUSHALL")
    return redis_server


class Sink:
    """Records every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_matched(self, user_id: str, match: Match) -> None:
        self.events.append(("matched", user_id, match))

    def on_partner_left(self, user_id: str, room_id: str, reason: str) -> None:
        self.events.append(("left", user_id, room_id, reason))

    def on_relay(self, user_id: str, room_id: str, frame: dict) -> None:
        self.events.append(("relay", user_id, room_id, frame))

    def on_kick(self, user_id: str, code: str, reason: str) -> None:
        self.events.append(("kick", user_id, code, reason))

    def on_undelivered(self, user_id: str, room_id: str, frame: dict[str, Any]) -> None:
        self.events.append(("undelivered", user_id, room_id, frame))

    def on_handover(self, user_id: str) -> dict[str, Any] | None:
        self.events.append(("handover", user_id))
        return None  # an engine-level test has no session to hand over

    def of(self, kind: str, user: str | None = None) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind and (user is None or e[1] == user)]


MakeEngine = Callable[..., Awaitable[tuple[RedisEngine, Sink]]]


def prefs(interests: tuple[str, ...] = (), only: bool = False, **kw: str) -> Preferences:
    age, mode, queue = kw.get("age", "adult"), kw.get("mode", "text"), kw.get("queue", "moderated")
    return Preferences(age, mode, queue, interests, only)


def now() -> float:
    return reactor.seconds()


async def inbox_read(redis: RedisServer, engine: RedisEngine, sink: Sink, user: str) -> None:
    """Everything already in ``engine``'s inbox has been handled: a marker appended after it (a
    kick for the local ``user``, in the documented ``inbox:{id}`` format) has come through, and
    the stream is read in order.  How a test asserts that nothing *more* arrives."""
    marker = f"read-{len(sink.events)}"
    event = ["k", user, "MARK", marker]
    redis.command("XADD", engine.inbox.stream, "*", "b", msgpack.packb([event]))
    await eventually(lambda: ("kick", user, "MARK", marker) in sink.events, what="inbox read")


async def matched_across(
    engines: MakeEngine,
    ua: str = "ua",
    ub: str = "ub",
    interests: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
) -> tuple[RedisEngine, Sink, RedisEngine, Sink, Match]:
    """Instances ``a`` and ``b`` (from the :func:`engines` fixture), ``ua`` on ``a`` waiting and
    ``ub`` on ``b`` matched with it (their ``interests``): ``(a, a's sink, b, b's sink, the
    match)``, once ``a`` has learnt of the room through its inbox."""
    a, sa = await engines("a")
    b, sb = await engines("b")
    await a.connect(ua, "1.1.1.1")
    await b.connect(ub, "2.2.2.2")
    assert await a.join(ua, prefs(interests[0]), now()) is None
    m = await b.join(ub, prefs(interests[1]), now())
    assert m is not None
    await eventually(lambda: sa.of("matched", ua), what=f"{ua} told of the match")
    return a, sa, b, sb, m


@pytest_twisted.async_yield_fixture
async def engines(redis: RedisServer):
    """``await make(name, **config)`` -> (engine, sink): Redis engines in this reactor, on the
    test redis-server; all stopped afterwards."""
    made: list[RedisEngine] = []

    async def make(name: str = "a", **overrides: Any) -> tuple[RedisEngine, Sink]:
        cfg = EngineConfig(instance_id=name, redis_url=redis.url, **overrides)
        engine = RedisEngine(cfg, reactor)
        sink = Sink()
        await engine.start(sink)
        made.append(engine)
        return engine, sink

    yield make
    for engine in made:
        await engine.stop()


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis")
    return request.param


_CLASSIFIERS: dict[bool, Classifier] = {}


def shared_classifier(learned: bool = True) -> Classifier:
    """The packaged moderation rules (with or without the learned layer), loaded once per test
    run for every test and in-process instance that uses them: a load takes seconds, and
    ``classify`` is pure, so tests share one as connections do."""
    if learned not in _CLASSIFIERS:
        _CLASSIFIERS[learned] = Classifier(learned=learned)
    return _CLASSIFIERS[learned]


@pytest.fixture(scope="session")
def packaged_rules() -> Classifier:
    return shared_classifier()


@pytest.fixture(scope="session")
def rules_only() -> Classifier:
    """The packaged rules without the learned layer."""
    return shared_classifier(learned=False)


@pytest.fixture
def make_memory_server(packaged_rules: Classifier) -> Iterator[Callable[..., Any]]:
    """``make(**settings)`` -> a :class:`tests.memory.MemoryServer` (the service on a clock, no
    sockets); all are closed afterwards."""
    from tests.memory import MemoryServer  # it imports this module (``settings``)

    made: list[MemoryServer] = []

    def make(**overrides: Any) -> MemoryServer:
        made.append(MemoryServer(packaged_rules, **overrides))
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest_twisted.async_yield_fixture
async def make_server(engine_name: str, request: pytest.FixtureRequest, packaged_rules):
    """``await make_server(**settings)`` starts an instance; all are stopped after the test.
    ``hub_clock``: a ``task.Clock`` for the hub's time (the report grace period)."""
    started: list[ServerHandle] = []

    async def make(hub_clock: task.Clock | None = None, **overrides: Any) -> ServerHandle:
        overrides.setdefault("engine", engine_name)
        if overrides["engine"] == "redis":
            overrides.setdefault("redis", request.getfixturevalue("redis").url)
            overrides.setdefault("instance_id", f"test-{len(started)}")
        shared = None if overrides.get("moderation_rules") else packaged_rules
        service = AnygleService(settings(**overrides), reactor, hub_clock, shared)
        service.startService()
        handle = ServerHandle(service)
        started.append(handle)
        # the redis engine connects asynchronously
        await eventually(lambda: service.engine.health()[0], what="engine ready")
        return handle

    yield make
    for handle in started:
        await handle.stop()


@pytest_twisted.async_yield_fixture
async def server(make_server):
    yield await make_server()


__all__ = ["ServerHandle", "defer", "eventually", "settings", "sleep"]
