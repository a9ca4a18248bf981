"""Connections to Redis: the address in ``--redis``, and txredisapi's protocol and reconnecting
factory with the engine's hooks (shared by the engine's command and inbox connections)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import txredisapi
from twisted.internet._resolver import GAIResolver  # the reactor's own default resolver
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint
from twisted.internet.interfaces import IReactorPluggableNameResolver, IStreamClientEndpoint
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

__all__ = ["RedisAddress", "RedisFactory", "RedisProtocol", "endpoint"]


@dataclass(slots=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    password: str | None = None
    username: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        u = urlparse(url)
        if u.scheme == "unix":
            db = int(parse_qs(u.query).get("db", ["0"])[0])
            return cls(path=u.path, db=db, password=u.password and unquote(u.password))
        if u.scheme not in ("redis", ""):
            raise ValueError(f"unsupported Redis URL {url!r}")
        db = int(u.path.strip("/") or 0)
        return cls(
            host=u.hostname or "127.0.0.1",
            port=u.port or 6379,
            db=db,
            password=unquote(u.password) if u.password else None,
            username=unquote(u.username) if u.username else None,
        )

    def __str__(self) -> str:
        return self.path or f"{self.host}:{self.port}"


def endpoint(reactor: Any, address: RedisAddress) -> IStreamClientEndpoint:
    """Where a connection to ``address`` is made (a Unix socket, or TCP)."""
    if address.path:
        return UNIXClientEndpoint(reactor, address.path, timeout=2)
    return HostnameEndpoint(_OwnLookups.of(reactor), address.host, address.port, timeout=2)


class _DaemonThread(threading.Thread):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, daemon=True, **kwargs)


@implementer(IReactorPluggableNameResolver)
class _OwnLookups:
    """The reactor, with Redis's host name looked up in daemon threads of our own.

    The system resolver (``getaddrinfo``) blocks a thread; for a name whose DNS has gone
    (Redis's container stopped first, its DNS server unreachable) for 30 s and more.  The
    reactor joins its own pool's threads when it stops, so a lookup in flight held a SIGTERM'd
    instance that long; these threads are left to end with the process."""

    _by_reactor: weakref.WeakKeyDictionary[Any, _OwnLookups] = weakref.WeakKeyDictionary()

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        pool = ThreadPool(0, 4, "anygle-redis-lookup")
        pool.threadFactory = _DaemonThread
        pool.start()
        self.nameResolver = GAIResolver(reactor, getThreadPool=lambda: pool)

    @classmethod
    def of(cls, reactor: Any) -> _OwnLookups:
        """One pool per reactor, however many connections and reconnections."""
        own = cls._by_reactor.get(reactor)
        if own is None:
            own = cls._by_reactor[reactor] = cls(reactor)
        return own

    def installNameResolver(self, resolver: Any) -> Any:
        raise NotImplementedError("fixed: the lookups for Redis's host name")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


# txredisapi has no type information: its classes are Any to mypy.
class RedisProtocol(txredisapi.RedisProtocol):  # type: ignore[misc]
    """txredisapi's protocol (hiredis parser when installed) with a cheaper reply timeout.

    txredisapi's ``replyTimeout`` schedules (and cancels) a ``DelayedCall`` per command; at a few
    thousand commands/s the cancelled calls linger in the reactor's heap long enough to be
    promoted to the GC's oldest generation and trigger full collections (measured: 100-300 ms
    stalls every second under a 500 joins/s load).  Instead the engine's heartbeat checks twice
    a second that a connection with replies outstanding has received something lately.
    """

    last_activity = 0.0

    def dataReceived(self, data: bytes, unpause: bool = False) -> Any:
        self.last_activity = time.monotonic()
        return super().dataReceived(data, unpause)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if not self.replyQueue.waiting:
            self.last_activity = time.monotonic()  # the wait starts now
        return super().execute_command(*args, **kwargs)

    def stalled(self, limit: float) -> bool:
        return bool(self.replyQueue.waiting) and time.monotonic() - self.last_activity > limit


class RedisFactory(txredisapi.RedisFactory):  # type: ignore[misc]  # (untyped, as above)
    """One reconnecting connection; tells the engine when it is usable and when it is gone."""

    protocol = RedisProtocol

    initialDelay = 0.1
    factor = 2.0
    maxDelay = 2.0
    jitter = 0.1

    def __init__(
        self,
        address: RedisAddress,
        on_ready: Callable[[Any], None],
        on_lost: Callable[[Any], None],
    ) -> None:
        super().__init__(
            str(address),
            address.db or None,
            1,
            isLazy=True,
            charset=None,
            password=address.password,
            replyTimeout=None,  # see RedisProtocol
            convertNumbers=False,
            username=address.username,
        )
        self.on_ready = on_ready
        self.on_lost = on_lost

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        proto.whenConnected().addCallback(self._ready)
        return proto

    def _ready(self, proto: Any) -> Any:
        proto.whenDisconnected().addCallback(self.on_lost)
        self.on_ready(proto)
        return proto
