"""``twistd anygle``: command-line options and the service tree.

``makeService`` builds, in start order: the engine, the background group (reactor-lag probe,
matcher tick, periodic pushes) and the listeners (WebSocket, HTTP, console), each a stock Twisted
service.  Stopping runs in reverse, one group at a time: stop listening, drain the users, stop the
timers, stop the engine.
"""

from __future__ import annotations

import gc
import platform
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site
from zope.interface import implementer

import anygle
from anygle.admission import Admission
from anygle.clientip import ClientAddressResolver, parse_networks
from anygle.config import OPTIONS, ConfigError, Settings, resolve
from anygle.console import build_namespace
from anygle.engine import EngineConfig, create_engine
from anygle.engine.base import Engine
from anygle.hub import Hub
from anygle.ice import IceServers
from anygle.limits import AbuseKeyTable
from anygle.manhole import manhole_factory
from anygle.moderation import Classifier
from anygle.periodic import Periodic
from anygle.protocol import AnygleFactory
from anygle.reactorlag import ReactorLag
from anygle.redisurl import RedisAddress, redacted
from anygle.screening import Screening, ScreeningSettings
from anygle.web import Root, WebClient


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Anygle: anonymous 1:1 stranger chat over WebSocket. Every option can also be set as "
        "ANYGLE_<OPTION> in the environment or in the [anygle] section of the config file "
        "(precedence: command line > environment > config file > default)."
    )
    optParameters = [
        ["config", "c", None, "config file (default: /etc/anygle/anygle.conf if present)"]
    ] + [[o.name, None, None, f"{o.help} [default: {o.shown_default}]"] for o in OPTIONS]

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

    def opt_version(self) -> None:
        """Anygle's version and what it runs on, then exit."""
        from importlib.metadata import version

        print(
            f"anygle {anygle.__version__} (Twisted {version('twisted')}, "
            f"Autobahn {version('autobahn')}, Python {platform.python_version()})"
        )
        raise SystemExit(0)


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


@implementer(IStreamServerEndpoint)
class _KeepPort:
    """An endpoint that hands the port it listened on to ``keep`` (the stock service keeps it
    private; tests listen on port 0 and read the number back, the console shows it)."""

    def __init__(self, endpoint: IStreamServerEndpoint, keep: Callable[[Any], None]) -> None:
        self.endpoint = endpoint
        self.keep = keep

    def listen(self, factory: Any) -> Deferred[Any]:
        def keep(port: Any) -> Any:
            self.keep(port)
            return port

        return self.endpoint.listen(factory).addCallback(keep)


class Listener(StreamServerEndpointService):
    """Twisted's endpoint service, named after its option, with the bound port as ``port``.

    As with ``strports.service``, a port that cannot be bound raises from
    ``privilegedStartService`` instead of only being logged; a failure that comes later (an
    endpoint that listens asynchronously) is logged by the stock service.
    """

    def __init__(
        self, option: str, description: str, factory: Any, reactor: Any, *, backlog: bool = False
    ) -> None:
        """``backlog``: listen with :func:`default_backlog` unless ``description`` names one
        (``description`` stays what the operator wrote: errors and the console show it)."""
        self.option = option
        self.description = description
        self.port: Any = None
        endpoint = endpoints.serverFromString(
            reactor, with_backlog(description) if backlog else description
        )
        super().__init__(_KeepPort(endpoint, self._keep), factory)
        self.setName(option)
        self._raiseSynchronously = True

    def _keep(self, port: Any) -> None:
        self.port = port

    def stopService(self) -> Deferred[None]:
        self.port = None
        stopped: Deferred[None] = super().stopService()
        return stopped


class StartError(Exception):
    """The service cannot start: one line (under twistd: on stderr, exit status 2)."""


class ListenError(StartError):
    """A listener could not be opened: one line naming the option, the address and the reason."""

    def __init__(self, listener: Listener, error: BaseException) -> None:
        reason = getattr(getattr(error, "socketError", None), "strerror", None) or str(error)
        super().__init__(f"--{listener.option} {listener.description}: cannot listen: {reason}")


class AnygleService(MultiService):
    """The whole instance; its parts are attributes for the console and the tests."""

    log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor: Any,
        hub_clock: Any = None,
        classifier: Classifier | None = None,
    ) -> None:
        """``hub_clock``: the hub's notion of now (message times, the report grace period),
        the reactor unless a test drives it with a ``task.Clock``.  ``classifier``: one already
        loaded from ``settings.moderation_rules`` to share (loading the rules takes seconds, and
        the test suite starts hundreds of instances); a new one by default."""
        super().__init__()
        self.settings = settings
        self.reactor = reactor
        self.engine = create_engine(
            settings.engine,
            EngineConfig(
                instance_id=settings.instance_id,
                interest_timeout=settings.interest_timeout,
                rematch_cooldown=settings.rematch_cooldown,
                redis_url=settings.redis,
                redis_tls=(settings.redis_tls_ca, settings.redis_tls_cert, settings.redis_tls_key),
                redis_sentinels=settings.redis_sentinels,
                redis_master=settings.redis_master,
                report_retention=settings.report_retention,
                report_ban_reporters=settings.report_ban_reporters,
                report_ban_ttl=settings.report_ban_ttl or None,
            ),
            reactor,
        )
        self.abuse_keys = AbuseKeyTable(settings.max_abuse_keys, reactor)
        self.classifier = classifier or Classifier(settings.moderation_rules or None)
        screening = Screening(
            self.classifier,
            self.engine,
            settings=ScreeningSettings(
                protect_adults=settings.protect_adults,
                ban_ttl=settings.ban_ttl or None,
                ip_ban_ttl=settings.ip_ban_ttl,
                shared_key_connections=settings.shared_key_connections,
            ),
            abuse_keys=self.abuse_keys,
        )
        admission = Admission(
            self.engine,
            self.abuse_keys,
            rate_limit=settings.rate_limit,
            max_per_key=settings.max_connections_per_ip,
        )
        self.hub = Hub(
            self.engine,
            hub_clock or reactor,
            admission,
            screening,
            IceServers(
                stun_urls=settings.stun_urls,
                turn_urls=settings.turn_urls,
                turn_secret=settings.turn_secret,
                turn_ttl=settings.turn_ttl,
            ),
            resume_grace=settings.resume_grace,
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
                lag=self.lag,
                turns=self.factory.turns,
                client=WebClient(settings.web_client_ws_url, self._ws_port)
                if settings.web_client
                else None,
            )
        )
        self.site.displayTracebacks = False
        self.engine_service = EngineService(self.engine, self.hub)
        self.timers = [
            Periodic("matcher", settings.match_interval, self._tick, reactor),
            Periodic("searching", settings.searching_interval, self.hub.push_searching, reactor),
            Periodic("stats", settings.stats_interval, self.hub.push_stats, reactor),
            Periodic("bans", 1.0, self.hub.enforce_bans, reactor),
            Periodic("ended-chats", 10.0, self.hub.forget_ended_chats, reactor),
        ]
        self.ws = Listener("ws", settings.ws, self.factory, reactor, backlog=True)
        self.http = Listener("http", settings.http, self.site, reactor)
        self.listeners = [self.ws, self.http]
        if settings.manhole:
            factory = manhole_factory(
                build_namespace(self), settings.manhole_keys, settings.manhole_host_key
            )
            self.listeners.append(Listener("manhole", settings.manhole, factory, reactor))
        # Three stock MultiServices, started in this order and stopped in reverse, one group at a
        # time (a MultiService stops its children all at once, and the users must be drained
        # between the listeners and the timers, the timers stopped before the engine).
        self.background = _group("background", self.lag, *self.timers)
        self.front = Listeners(self.listeners)
        for child in (self.engine_service, self.background, self.front):
            child.setServiceParent(self)
        self._opened = False
        self.exit_on_start_error = False

    def privilegedStartService(self) -> None:
        """Open every listener (before twistd drops privileges), or none: see ``Listeners``.

        With the redis engine, it logs in to Redis once first: a password, ACL user or TLS
        certificate that Redis refuses stops start-up (Redis unreachable does not: the instance
        starts and retries).  Under twistd (``exit_on_start_error``), either ends the process
        with one line on stderr and exit status 2 instead of a traceback."""
        self._opened = True
        try:
            self._check_redis_login()
            super().privilegedStartService()
        except StartError as e:
            if not self.exit_on_start_error:
                raise
            # twistd has replaced sys.stderr with its log by now; the user reads the terminal.
            (sys.__stderr__ or sys.stderr).write(f"anygle: error: {e}\n")
            raise SystemExit(2) from None

    def _check_redis_login(self) -> None:
        s = self.settings
        if s.engine != "redis":
            return
        from anygle.engine.redis.blocking import check_login  # the redis engine's own module

        address = RedisAddress.parse(s.redis)
        address = address.with_tls_files(s.redis_tls_ca, s.redis_tls_cert, s.redis_tls_key)
        address = address.with_sentinels(s.redis_sentinels, s.redis_master)
        reason = check_login(address)
        if reason is not None:
            raise StartError(f"--redis {redacted(s.redis)}: {reason}")

    def startService(self) -> None:
        if not self._opened:  # started directly (tests), not by twistd
            self.privilegedStartService()
        super().startService()
        self.log.info("{summary}", summary=self.summary())

    def summary(self) -> str:
        """One line for the log at start: what this instance is and where to reach it."""
        s = self.settings
        engine = s.engine if s.engine == "memory" else f"redis at {redacted(s.redis)}"
        parts = [f"anygle {anygle.__version__} ({s.instance_id}): engine {engine}"]
        ws = self._ws_port()
        parts.append(f"WebSocket on port {ws}" if ws else f"WebSocket on {s.ws}")
        bound = self.http.port.getHost() if self.http.port else None
        http = getattr(bound, "port", None)
        if s.web_client and http:
            host = getattr(bound, "host", "")
            host = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1", "::1") else host
            host = f"[{host}]" if ":" in host else host
            parts.append(f"web client at http://{host}:{http}/")
        else:
            parts.append(f"HTTP on {http or s.http}")
        parts.append(f"config {s.config or 'none (defaults, environment, command line)'}")
        return "; ".join(parts)

    def _ws_port(self) -> int | None:
        """The WebSocket listener's TCP port (what the web client connects to), if it has one."""
        port = self.ws.port
        return getattr(port.getHost(), "port", None) if port is not None else None

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
        await self.front.stopService()
        deadline = self.reactor.seconds() + self.settings.shutdown_timeout
        try:
            drain = Deferred.fromCoroutine(self.hub.drain())
            await drain.addTimeout(self.settings.shutdown_timeout, self.reactor)
        except Exception:
            self.log.failure("drain failed")
        while self.factory.connections and self.reactor.seconds() < deadline:
            await deferLater(self.reactor, 0.05, lambda: None)
        for proto in list(self.factory.connections):  # did not finish the close handshake
            proto.dropConnection(abort=True)
        await self.background.stopService()
        await self.engine_service.stopService()


def _group(name: str, *children: IService) -> MultiService:
    group = MultiService()
    group.setName(name)
    for child in children:
        child.setServiceParent(group)
    return group


class Listeners(MultiService):
    """The listeners, opened all or none: when one cannot be bound, those already open are
    closed again and ``ListenError`` says which one failed and why."""

    def __init__(self, listeners: list[Listener]) -> None:
        super().__init__()
        self.setName("listeners")
        for listener in listeners:
            listener.setServiceParent(self)

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        opened: list[Listener] = []
        for listener in self:
            try:
                listener.privilegedStartService()
            except Exception as e:
                for other in opened:
                    other.stopService()
                raise ListenError(listener, e) from e
            opened.append(listener)


# Endpoint types whose parser takes ``backlog=`` (``systemd:`` sockets come listening already).
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "unix", "ssl"})


def default_backlog() -> int:
    """The listen backlog for the WebSocket listener: at least 4096, or the kernel's
    ``net.core.somaxconn`` when it is larger (the kernel caps the backlog at that value anyway).

    Twisted's default is 50: a reconnect storm (every client of a restarted instance at once)
    overflows it, the kernel drops SYNs and clients wait for SYN retransmits (1 s, 3 s, 7 s ...);
    the bench's connect-storm scenario measures it (docs/operations.md, "Overload")."""
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
    service.exit_on_start_error = True
    # Operators reload rules with `kill -HUP`; the handler only schedules work on the reactor.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(service.reload_moderation))
    reactor.callWhenRunning(tune_gc)
    return service


def tune_gc() -> None:
    """Keep full garbage collections out of the latency tail.

    With thousands of connections a full (generation 2) pass stalls every user for a long time
    (the bench's join->matched tail shows it).  Start-up objects (modules, rules) are frozen out
    of the collector; the first generation is collected every 50,000 allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
