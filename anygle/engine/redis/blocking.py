"""A blocking Redis connection, outside the reactor: the lease thread renews through one
(:mod:`.liveness`), and the service logs in through one once before it starts
(:func:`check_login`), so that a wrong password or TLS certificate stops start-up with one line
instead of an instance that runs without ever reaching Redis."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

from anygle.redisurl import RedisAddress

__all__ = ["BlockingConnection", "RespError", "check_login"]


class RespError(Exception):
    """An error reply (``-ERR …``, ``-WRONGPASS …``)."""


def encode(*args: Any) -> bytes:
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def read_reply(f: Any) -> Any:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RespError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [read_reply(f) for _ in range(n)]
    raise ConnectionError(f"bad reply {line!r}")


def primary_of(address: RedisAddress, timeout: float) -> RedisAddress:
    """Where the sentinels say the primary is now (``SENTINEL get-master-addr-by-name``), asking
    them in turn; OSError when none of them answers with an address."""
    for host, port in address.sentinels:
        try:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.sendall(encode("SENTINEL", "get-master-addr-by-name", address.master))
                reply = read_reply(sock.makefile("rb"))
        except (OSError, ConnectionError, RespError):
            continue
        if reply:
            return address.at(reply[0].decode(), int(reply[1]))
    raise ConnectionRefusedError(f"no sentinel names a primary {address.master!r}")


class BlockingConnection:
    """One socket to ``address`` (TLS for ``rediss://``), logged in and on its db."""

    def __init__(self, address: RedisAddress, timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self._tls: ssl.SSLContext | None = None  # made at the first connection, then reused
        self._sock: socket.socket | None = None
        self._file: Any = None

    def call(self, *args: Any) -> Any:
        """One command and its reply (connecting first if needed)."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sock.sendall(encode(*args))
        return read_reply(self._file)

    def connect(self, host: str | None = None) -> None:
        """Connect (to ``host``, an address already looked up, if given), then AUTH and
        SELECT; errors: OSError (unreachable, TLS refused), RespError (AUTH, SELECT)."""
        a = self.address
        if a.sentinels:
            a = primary_of(a, self.timeout)
        if a.path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(a.path)
        else:
            sock = socket.create_connection((host or a.host, a.port), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if a.tls:
                if self._tls is None:
                    self._tls = a.ssl_context()
                try:
                    sock = self._tls.wrap_socket(sock, server_hostname=a.host)
                except BaseException:
                    sock.close()
                    raise
        self._sock, self._file = sock, sock.makefile("rb")
        if a.password is not None:
            if a.username:
                self.call("AUTH", a.username, a.password)
            else:
                self.call("AUTH", a.password)
        if a.db:
            self.call("SELECT", a.db)

    def close(self) -> None:
        sock, self._sock, self._file = self._sock, None, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


# Error replies that say "not now" rather than "not you": Redis loading its data after a restart,
# running a long script, a replica without its primary.
PASSING = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def is_passing(error: str) -> bool:
    """Whether an error reply is a state Redis will leave by itself (see :data:`PASSING`)."""
    return error.split(" ", 1)[0] in PASSING


def check_login(address: RedisAddress, timeout: float = 2.0) -> str | None:
    """Log in once; the reason when Redis answers but refuses this configuration (password or
    ACL user, TLS certificate or name, db), else None, also when Redis cannot be reached at all
    or its name does not resolve within ``timeout``: that is an outage, the instance starts and
    retries.  Never waits much longer than ``timeout`` per step (a name lookup that hangs is
    left to its thread)."""
    host = None
    if address.sentinels:
        try:
            address = primary_of(address, timeout)
        except OSError:
            return None  # no primary known now: the instance starts and asks again
    if not address.path:
        found: list[str] = []

        def look_up() -> None:
            try:
                found.append(str(socket.getaddrinfo(address.host, address.port)[0][4][0]))
            except OSError:
                pass

        lookup = threading.Thread(target=look_up, name="anygle-redis-check", daemon=True)
        lookup.start()
        lookup.join(timeout)
        if not found:
            return None
        host = found[0]
    connection = BlockingConnection(address, timeout)
    try:
        connection.connect(host)
        connection.call("PING")
    except ssl.SSLCertVerificationError as e:
        return f"TLS: the server's certificate is refused ({e.verify_message})"
    except ssl.SSLError as e:
        asked = "CERTIFICATE_REQUIRED" in str(e.reason) or isinstance(e, ssl.SSLEOFError)
        if asked and not address.tls_cert:  # TLS 1.3 ends it after the handshake, often bare
            return "TLS: the server wants a client certificate (--redis-tls-cert, --redis-tls-key)"
        return f"TLS handshake failed ({e.reason or e})"
    except RespError as e:
        if is_passing(str(e)):
            return None  # Redis starting or busy: an outage, it will answer later
        return f"redis refused to log in: {e}"
    except (OSError, ConnectionError):
        return None  # unreachable, or gone meanwhile: an outage, not a mistake
    finally:
        connection.close()
    return None
