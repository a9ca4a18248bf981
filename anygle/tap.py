"""``twistd anygle``: command-line options and the service tree.

``makeService`` builds, in start order: the engine, the matcher tick and the periodic pushes, then
the WebSocket and HTTP listeners.  Stopping runs in the reverse, explicit order (a MultiService
would stop its children all at once): stop listening, stop the timers, stop the engine.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from anygle.config import OPTIONS, ConfigError, Settings, resolve
from anygle.engine import EngineConfig, create_engine
from anygle.engine.base import Engine
from anygle.hub import Hub, HubSettings
from anygle.periodic import Periodic
from anygle.protocol import AnygleFactory
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
        self.hub = Hub(
            self.engine,
            reactor,
            HubSettings(
                stats_interval=settings.stats_interval,
                searching_interval=settings.searching_interval,
            ),
        )
        self.factory = AnygleFactory(
            self.hub,
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            reactor=reactor,
        )
        self.site = Site(Root(self.hub, settings.engine, settings.instance_id))
        self.site.displayTracebacks = False
        self.engine_service = EngineService(self.engine, self.hub)
        self.timers = [
            Periodic("matcher", settings.match_interval / 1000.0, self._tick, reactor),
            Periodic("searching", settings.searching_interval, self.hub.push_searching, reactor),
            Periodic("stats", settings.stats_interval, self.hub.push_stats, reactor),
        ]
        self.ws = Listener("ws", settings.ws, self.factory, reactor)
        self.http = Listener("http", settings.http, self.site, reactor)
        for child in (self.engine_service, *self.timers, self.ws, self.http):
            child.setServiceParent(self)

    def _tick(self) -> Deferred[int]:
        return self.engine.tick(self.reactor.seconds())

    def stopService(self) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        for listener in (self.ws, self.http):
            await _maybe(listener.stopService())
        for timer in self.timers:
            await timer.stopService()
        await self.engine_service.stopService()


async def _maybe(d: Deferred[Any] | None) -> None:
    if d is not None:
        await d


def makeService(config: Options, reactor: Any = None) -> AnygleService:
    if reactor is None:
        from twisted.internet import reactor
    return AnygleService(config.settings, reactor)
