"""``twistd anygle``: command-line options and the service tree.

``makeService`` builds, in start order: the engine, the matcher tick and the periodic pushes, then
the WebSocket and HTTP listeners.  Stopping runs in the reverse, explicit order (a MultiService
would stop its children all at once): stop listening, stop the timers, stop the engine.
"""

from __future__ import annotations

import gc
import signal
import sys
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from anygle.clientip import ClientAddressResolver, parse_networks
from anygle.config import OPTIONS, ConfigError, Settings, resolve
from anygle.console import build_namespace
from anygle.engine import EngineConfig, create_engine
from anygle.engine.base import Engine
from anygle.hub import Hub, HubSettings
from anygle.limits import AbuseKeyTable
from anygle.manhole import manhole_factory
from anygle.moderation import Classifier
from anygle.periodic import Periodic
from anygle.protocol import AnygleFactory
from anygle.reactorlag import ReactorLag
from anygle.screening import Screening, ScreeningSettings
from anygle.web import Root


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Anygle: anonymous 1:1 stranger chat over WebSocket. Every option can also be set as "
        "ANYGLE_<OPTION> in the environment or in the [anygle] section of the config file "
        "(precedence: command line > environment > config file > default)."
    )
    optParameters = [["config", "c", None, "config file (default: etc/anygle.conf if present)"]] + [
        [o.name, None, None, f"{o.help} [default: {o.default or 'auto'}]"] for o in OPTIONS
    ]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Bad options or values end in one line on stderr and exit status 2, not a traceback."""
        try:
            super().parseOptions(options)
        except (usage.UsageError, ConfigError) as e:
            sys.stderr.write(f"anygle: error: {e}\n")
            raise SystemExit(2) from None

    def postOptions(self) -> None:
        cli = {o.name: self[o.name] for o in OPTIONS}
        self.settings = resolve(cli, config_path=self["config"])


class EngineService(Service):
    """Starts the engine with the hub as its sink; stops it last."""

    log = Logger()

    def __init__(self, engine: Engine, hub: Hub) -> None:
        self.setName("engine")
        self.engine = engine
        self.hub = hub

    def startService(self) -> None:
        super().startService()
        self.engine.start(self.hub).addErrback(
            lambda f: self.log.failure("engine failed to start", f)
        )

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self.engine.stop()


class Listener(Service):
    """Listens on an endpoint string; a port that cannot be bound fails start-up (not just a log
    line), and the bound port is available as ``self.port`` (tests listen on port 0)."""

    def __init__(self, name: str, description: str, factory: Any, reactor: Any) -> None:
        self.setName(name)
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self.port: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        endpoint = endpoints.serverFromString(self.reactor, self.description)
        d = endpoint.listen(self.factory)
        failures: list[Any] = []
        d.addCallbacks(self._listening, failures.append)
        if failures:
            failures[0].raiseException()

    def _listening(self, port: Any) -> None:
        self.port = port

    def startService(self) -> None:
        if self.port is None and not self.running:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


class AnygleService(MultiService):
    """The whole instance; its parts are attributes for the console and the tests."""

    log = Logger()

    def __init__(self, settings: Settings, reactor: Any) -> None:
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.engine = create_engine(
            settings.engine,
            EngineConfig(
                instance_id=settings.instance_id,
                interest_timeout=settings.interest_timeout / 1000.0,
                rematch_cooldown=settings.rematch_cooldown,
                redis_url=settings.redis,
            ),
            reactor,
        )
        self.abuse_keys = AbuseKeyTable(settings.max_abuse_keys, reactor)
        self.classifier = Classifier(settings.moderation_rules or None)
        screening = Screening(
            self.classifier,
            self.engine,
            settings=ScreeningSettings(
                protect_adults=settings.protect_adults, ban_ttl=settings.ban_ttl or None
            ),
            abuse_keys=self.abuse_keys,
        )
        self.hub = Hub(
            self.engine,
            reactor,
            HubSettings(
                stats_interval=settings.stats_interval,
                searching_interval=settings.searching_interval,
            ),
            screening,
        )
        resolver = ClientAddressResolver(
            parse_networks(settings.trusted_proxies), settings.ipv6_prefix
        )
        self.factory = AnygleFactory(
            self.hub,
            resolver=resolver,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            allowed_origins=settings.allowed_origins,
            rate_limit=settings.rate_limit,
            max_per_ip=settings.max_connections_per_ip,
            abuse_keys=self.abuse_keys,
            max_queued_bytes=settings.max_queued_bytes,
            message_limits=settings.message_limits,
            reactor=reactor,
        )
        self.lag = ReactorLag(reactor)
        self.site = Site(
            Root(
                self.hub,
                settings.engine,
                settings.instance_id,
                resolver,
                settings.rate_limit,
                lag=self.lag,
                turns=self.factory.turns,
                abuse_keys=self.abuse_keys,
            )
        )
        self.site.displayTracebacks = False
        self.engine_service = EngineService(self.engine, self.hub)
        self.timers = [
            Periodic("matcher", settings.match_interval / 1000.0, self._tick, reactor),
            Periodic("searching", settings.searching_interval, self.hub.push_searching, reactor),
            Periodic("stats", settings.stats_interval, self.hub.push_stats, reactor),
            Periodic("bans", 1.0, self.hub.enforce_bans, reactor),
        ]
        self.ws = Listener("ws", with_backlog(settings.ws), self.factory, reactor)
        self.http = Listener("http", settings.http, self.site, reactor)
        self.listeners = [self.ws, self.http]
        if settings.manhole:
            factory = manhole_factory(
                build_namespace(self), settings.manhole_keys, settings.manhole_host_key
            )
            self.listeners.append(Listener("manhole", settings.manhole, factory, reactor))
        for child in (self.engine_service, self.lag, *self.timers, *self.listeners):
            child.setServiceParent(self)

    def reload_moderation(self) -> str:
        """Re-read the moderation rules (SIGHUP, console); a broken file keeps the old rules."""
        try:
            self.classifier.reload()
        except ValueError as e:
            self.log.error("moderation rules NOT reloaded, keeping the old ones: {e}", e=str(e))
            return f"not reloaded: {e}"
        count = len(self.classifier.rules.sources)
        self.log.info("moderation rules reloaded from {count} files", count=count)
        return f"reloaded {count} rule files"

    def _tick(self) -> Deferred[int]:
        return self.engine.tick(self.reactor.seconds())

    def stopService(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """Stop accepting, let every user go (partners told, sockets closed with 1001), then
        stop the timers and the engine — all within ``shutdown-timeout``."""
        Service.stopService(self)
        for listener in self.listeners:
            await _maybe(listener.stopService())
        deadline = self.reactor.seconds() + self.settings.shutdown_timeout
        try:
            drain = Deferred.fromCoroutine(self.hub.drain())
            await _within(drain, self.settings.shutdown_timeout, self.reactor)
        except Exception:
            self.log.failure("drain failed")
        while self.factory.connections and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)
        for proto in list(self.factory.connections):  # did not finish the close handshake
            proto.dropConnection(abort=True)
        for timer in self.timers:
            await timer.stopService()
        self.lag.stopService()
        await self.engine_service.stopService()


async def _maybe(d: Deferred[Any] | None) -> None:
    if d is not None:
        await d


async def _within(d: Deferred[Any], seconds: float, reactor: Any) -> Any:
    """``d``'s result, or a TimeoutError after ``seconds``."""
    return await d.addTimeout(seconds, reactor)


# Endpoint types whose parser takes ``backlog=`` (``systemd:`` sockets come listening already).
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "unix", "ssl"})


def default_backlog() -> int:
    """The listen backlog for the WebSocket listener: at least 4096, or the kernel's
    ``net.core.somaxconn`` when it is larger (the kernel caps the backlog at that value anyway).

    Twisted's default is 50: a reconnect storm (every client of a restarted instance at once)
    overflows it, the kernel drops SYNs and clients wait for SYN retransmits (1 s, 3 s, 7 s ...);
    5,000 simultaneous connects took 37 s with 50 against ~3 s with 4096."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return max(4096, int(f.read().strip()))
    except (OSError, ValueError):
        return 4096


def _split_endpoint(description: str) -> list[str]:
    """Split a Twisted endpoint string on the colons that are not escaped with a backslash."""
    parts, current, escaped = [], [], False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def with_backlog(description: str, backlog: int | None = None) -> str:
    """``description`` with ``:backlog=N`` added when its type takes one and it has none; an
    explicit ``backlog=`` in the endpoint string wins."""
    parts = _split_endpoint(description)
    kind = parts[0].strip().lower()
    if kind not in _BACKLOG_TYPES or any(p.strip().startswith("backlog=") for p in parts[1:]):
        return description
    return f"{description}:backlog={backlog or default_backlog()}"


def makeService(config: Options, reactor: Any = None) -> AnygleService:
    if reactor is None:
        from twisted.internet import reactor
    service = AnygleService(config.settings, reactor)
    # Operators reload rules with `kill -HUP`; the handler only schedules work on the reactor.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(service.reload_moderation))
    reactor.callWhenRunning(tune_gc)
    return service


def tune_gc() -> None:
    """Keep full garbage collections out of the latency tail.

    With thousands of connections a full (generation 2) pass takes 100-300 ms, all of it a stall
    for every user.  Measured with the redis engine at 500 joins/s (pushes off): join->matched
    p99 7.9 ms -> 4.7 ms.  Start-up objects (modules, rules) are frozen out of the collector; the
    first generation is collected every 50,000 allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
