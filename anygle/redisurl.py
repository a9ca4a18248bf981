"""The ``--redis`` URL, parsed: checked when the configuration is read (a bad port or db is one
clear line at start-up, like every other bad option) and used by the redis engine to connect.
Kept apart from the engine so that reading the configuration never imports txredisapi.

``rediss://`` is Redis over TLS (managed Redis services require it): the server's certificate
is checked against ``--redis-tls-ca`` (else the system's CAs) and its name or address, and
``--redis-tls-cert``/``--redis-tls-key`` give a client certificate when the server asks for one.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, unquote, urlparse, urlsplit, urlunsplit

__all__ = ["RedisAddress", "redacted"]


def redacted(url: str) -> str:
    """``url`` without its password, for logs and error messages (other text unchanged)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


@dataclass(slots=True)
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    password: str | None = None
    username: str | None = None
    tls: bool = False  # rediss://
    tls_ca: str = ""  # PEM file of the CA(s) that sign the server's certificate ("": system's)
    tls_cert: str = ""  # PEM file of a client certificate (and its chain), if the server asks
    tls_key: str = ""  # its private key
    sentinels: tuple[tuple[str, int], ...] = ()  # --redis-sentinels: they name the primary
    master: str = ""  # --redis-master: the name the sentinels monitor it under

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """``redis[s]://[[user]:password@]host[:port][/db]`` or ``unix:///path[?db=N]``; a
        ValueError says what is wrong."""
        u = urlparse(url)
        if u.scheme == "unix":
            if not u.path:
                raise ValueError("has no socket path (unix:///run/redis/redis.sock)")
            db = _db(parse_qs(u.query).get("db", ["0"])[0])
            return cls(path=u.path, db=db, password=u.password and unquote(u.password))
        if u.scheme not in ("redis", "rediss", ""):
            raise ValueError(f"has scheme {u.scheme!r}: use redis://, rediss:// or unix://")
        try:
            port = u.port
        except ValueError:
            port_text = u.netloc.rpartition(":")[2]
            raise ValueError(f"has port {port_text!r}, not a number from 1 to 65535") from None
        if port == 0:
            raise ValueError("has port '0', not a number from 1 to 65535")
        return cls(
            host=u.hostname or "127.0.0.1",
            port=port or 6379,
            db=_db(u.path.strip("/") or "0"),
            password=unquote(u.password) if u.password else None,
            username=unquote(u.username) if u.username else None,
            tls=u.scheme == "rediss",
        )

    def with_sentinels(self, sentinels: str, master: str) -> RedisAddress:
        """This address with ``--redis-sentinels`` (``host:port,...``; empty: none): then the
        sentinels, not the URL's host, say where the primary is."""
        return replace(self, sentinels=parse_sentinels(sentinels), master=master)

    def at(self, host: str, port: int) -> RedisAddress:
        """The primary the sentinels named: this address there (password, db, TLS kept)."""
        return replace(self, host=host, port=port, sentinels=())

    def with_tls_files(self, ca: str, cert: str, key: str) -> RedisAddress:
        """This address with ``--redis-tls-ca``, ``-cert`` and ``-key``."""
        return replace(self, tls_ca=ca, tls_cert=cert, tls_key=key)

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS settings as Python's ``ssl`` wants them (the lease thread's own socket); a
        ValueError names the file that cannot be used and why."""
        try:
            context = ssl.create_default_context(cafile=self.tls_ca or None)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"--redis-tls-ca {self.tls_ca}: {_reason(e)}") from None
        if self.tls_cert or self.tls_key:
            try:
                context.load_cert_chain(self.tls_cert, self.tls_key or None)
            except (OSError, ssl.SSLError) as e:
                raise ValueError(
                    f"--redis-tls-cert {self.tls_cert} / --redis-tls-key {self.tls_key}: "
                    f"{_reason(e)}"
                ) from None
        return context

    def __str__(self) -> str:
        if self.sentinels:
            return f"{self.master!r} of sentinels {','.join(f'{h}:{p}' for h, p in self.sentinels)}"
        return self.path or f"{self.host}:{self.port}"


_SSL_REASONS = {
    "NO_CERTIFICATE_OR_CRL_FOUND": "no PEM certificate in it",
    "PEM_LIB": "not a PEM certificate with its private key",
    "KEY_VALUES_MISMATCH": "the key is not the certificate's",
}


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port[,host:port...]`` (IPv6 in brackets); ValueError names the bad part."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, _, port = part.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"has {part!r}: sentinels are host:port, separated by commas")
        found.append((host, int(port)))
    return tuple(found)


def _reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        reason = str(e.reason or "") or ("PEM_LIB" if "PEM lib" in str(e) else "")
        return _SSL_REASONS.get(reason, reason.lower().replace("_", " ") or str(e))
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e)


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"has database {text!r}, not a number (0, 1, …)")
    return int(text)
