"""Connections to Redis: the address in ``--redis``, and txredisapi's protocol and reconnecting
factory with the engine's hooks (shared by the engine's command and inbox connections)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import txredisapi
from OpenSSL import SSL
from twisted.internet import defer, error
from twisted.internet._resolver import GAIResolver  # the reactor's own default resolver
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorPluggableNameResolver, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
    platformTrust,
)
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from anygle.engine.redis.blocking import RespError, encode, read_reply
from anygle.redisurl import RedisAddress

__all__ = ["RedisAddress", "RedisFactory", "RedisProtocol", "endpoint"]


def endpoint(
    reactor: Any,
    address: RedisAddress,
    on_failed: Callable[[str], None] | None = None,
    on_primary: Callable[[RedisAddress], None] | None = None,
) -> IStreamClientEndpoint:
    """Where a connection to ``address`` is made (a Unix socket, TCP, or the primary the
    sentinels name at each attempt, told to ``on_primary``); ``on_failed`` hears why an attempt
    failed (refused, no such host, timed out), for ``/health`` and the log."""
    inner: IStreamClientEndpoint
    if address.sentinels:
        inner = _SentinelPrimary(reactor, address, on_primary)
    else:
        inner = _direct(reactor, address)
    return inner if on_failed is None else _Watched(inner, on_failed)


def _direct(reactor: Any, address: RedisAddress) -> IStreamClientEndpoint:
    if address.path:
        inner: IStreamClientEndpoint = UNIXClientEndpoint(reactor, address.path, timeout=2)
    else:
        inner = HostnameEndpoint(_OwnLookups.of(reactor), address.host, address.port, timeout=2)
    if address.tls:
        inner = wrapClientTLS(tls_options(address), inner)
    return inner


@implementer(IStreamClientEndpoint)
class _SentinelPrimary:
    """Each connection attempt asks the sentinels (in turn) where the primary is, then connects
    there: after a failover the reconnecting connections find the new primary by themselves."""

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        on_primary: Callable[[RedisAddress], None] | None,
    ) -> None:
        self.reactor = reactor
        self.address = address
        self.on_primary = on_primary

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        for host, port in self.address.sentinels:
            ask = HostnameEndpoint(_OwnLookups.of(self.reactor), host, port, timeout=2)
            try:
                proto: Any = await ask.connect(_OneReplyFactory(self.reactor))
            except (error.ConnectError, error.DNSLookupError, error.TimeoutError):
                continue  # this sentinel is down: ask the next
            try:
                reply = await proto.ask("SENTINEL", "get-master-addr-by-name", self.address.master)
            except (defer.TimeoutError, ConnectionError, RespError):
                continue
            finally:
                proto.transport.loseConnection()
            if reply:
                primary = self.address.at(reply[0].decode(), int(reply[1]))
                if self.on_primary is not None:
                    self.on_primary(primary)
                return await _direct(self.reactor, primary).connect(factory)
        raise error.ConnectError(string=f"no sentinel names a primary {self.address.master!r}")


class _OneReply(Protocol):
    """Sends one command to a sentinel and reads its one reply, then hangs up."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.buffer = b""
        self.reply: defer.Deferred[Any] = defer.Deferred()

    def ask(self, *args: Any) -> defer.Deferred[Any]:
        assert self.transport is not None
        self.transport.write(encode(*args))
        self.reply.addTimeout(2, self.reactor)
        return self.reply

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        try:
            value = read_reply(_Complete(self.buffer))
        except _Incomplete:
            return
        except (ConnectionError, RespError, ValueError) as e:
            self.transport.loseConnection()
            if not self.reply.called:
                self.reply.errback(e)
            return
        self.transport.loseConnection()
        if not self.reply.called:
            self.reply.callback(value)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.reply.called:
            self.reply.errback(ConnectionError("the sentinel closed the connection"))


class _Incomplete(Exception):
    pass


class _Complete:
    """A reply buffer that says "wait for more" instead of returning short reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def readline(self) -> bytes:
        end = self.data.find(b"\r\n", self.pos)
        if end < 0:
            raise _Incomplete()
        line, self.pos = self.data[self.pos : end + 2], end + 2
        return line

    def read(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Incomplete()
        chunk, self.pos = self.data[self.pos : self.pos + n], self.pos + n
        return chunk


class _OneReplyFactory(Factory):
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def buildProtocol(self, addr: Any) -> _OneReply:
        proto = _OneReply(self.reactor)
        proto.factory = self
        return proto


def tls_options(address: RedisAddress) -> Any:
    """Twisted's TLS client settings for ``address`` (``rediss://``): the server's certificate
    checked against ``tls_ca`` (else the system's CAs) and the URL's host name or address."""
    trust = Certificate.loadPEM(_read(address.tls_ca)) if address.tls_ca else platformTrust()
    client = None
    if address.tls_cert:
        client = PrivateCertificate.loadPEM(
            _read(address.tls_cert) + b"\n" + _read(address.tls_key)
        )
    return optionsForClientTLS(address.host, trustRoot=trust, clientCertificate=client)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@implementer(IStreamClientEndpoint)
class _Watched:
    """An endpoint that reports each failed attempt before the reconnecting service retries."""

    def __init__(self, inner: IStreamClientEndpoint, on_failed: Callable[[str], None]) -> None:
        self.inner = inner
        self.on_failed = on_failed

    def connect(self, factory: Any) -> Any:
        def failed(failure: Failure) -> Failure:
            if not failure.check(defer.CancelledError):
                self.on_failed(_why(failure))
            return failure

        return self.inner.connect(factory).addErrback(failed)


def _why(failure: Failure) -> str:
    """A connection error in a few words: "connection refused", "timed out", the DNS error."""
    e = failure.value
    if isinstance(e, error.ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, error.TimeoutError):
        return "no answer (timed out)"
    if isinstance(e, error.DNSLookupError):
        return f"cannot resolve the host name ({e.args[0] if e.args else 'lookup failed'})"
    if isinstance(e, SSL.Error):  # the handshake: most often a certificate that is not trusted
        reasons = [r[2] for r in e.args[0] if isinstance(r, tuple) and len(r) > 2] if e.args else []
        return f"TLS handshake failed: {', '.join(reasons) or e}"
    if type(e).__name__ == "VerificationError":  # service_identity: the name does not match
        return "TLS: the server's certificate does not name the URL's host"
    return failure.getErrorMessage().strip().rstrip(".") or type(e).__name__


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

    def connectionLost(self, why: Failure) -> None:
        # Over TLS the connection is "made" before the handshake: a certificate that is not
        # trusted shows only here, as the reason the connection was lost.
        if why.check(SSL.Error) or type(why.value).__name__ == "VerificationError":
            self.factory.tls_failed(_why(why))
        super().connectionLost(why)


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
        on_error: Callable[[str], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
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
        self.on_error = on_error
        self.on_failed = on_failed
        self.tls_failure: str | None = None  # why the last TLS handshake failed
        # txredisapi's "first connection" Deferred: nobody waits on it (the factory is lazy,
        # the engine hears of connections through the hooks), so its failure (a refused AUTH)
        # would be logged as unhandled; on_error reports it instead.
        self.deferred.addErrback(lambda _: None)

    def connectionError(self, why: str) -> None:
        """txredisapi's report of a connection it gave up on (AUTH or SELECT refused, or lost
        to a TLS handshake that failed meanwhile)."""
        if self.on_error is not None:
            self.on_error(self.tls_failure or why.removeprefix("Redis error: "))
        super().connectionError(why)

    def tls_failed(self, why: str) -> None:
        """A TLS handshake failed (the protocol tells): a failed attempt, like a refused one."""
        self.tls_failure = why
        if self.on_failed is not None:
            self.on_failed(why)

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        proto.whenConnected().addCallback(self._ready)
        return proto

    def _ready(self, proto: Any) -> Any:
        self.tls_failure = None
        proto.whenDisconnected().addCallback(self.on_lost)
        self.on_ready(proto)
        return proto
