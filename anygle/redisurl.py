"""The ``--redis`` URL, parsed: checked when the configuration is read (a bad port or db is one
clear line at start-up, like every other bad option) and used by the redis engine to connect.
Kept apart from the engine so that reading the configuration never imports txredisapi."""

from __future__ import annotations

from dataclasses import dataclass
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

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """``redis://[[user]:password@]host[:port][/db]`` or ``unix:///path[?db=N]``; a
        ValueError says what is wrong."""
        u = urlparse(url)
        if u.scheme == "unix":
            if not u.path:
                raise ValueError("has no socket path (unix:///run/redis/redis.sock)")
            db = _db(parse_qs(u.query).get("db", ["0"])[0])
            return cls(path=u.path, db=db, password=u.password and unquote(u.password))
        if u.scheme not in ("redis", ""):
            raise ValueError(f"has scheme {u.scheme!r}: use redis:// or unix://")
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
        )

    def __str__(self) -> str:
        return self.path or f"{self.host}:{self.port}"


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"has database {text!r}, not a number (0, 1, …)")
    return int(text)
