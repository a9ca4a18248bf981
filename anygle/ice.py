"""ICE servers for the clients' WebRTC calls, with ephemeral TURN credentials.

TURN credentials follow coturn's "TURN REST API" scheme (``use-auth-secret`` +
``static-auth-secret``, draft-uberti-behave-turn-rest-00): the TURN server and we share a secret;
we hand each user ``username = "<expiry unix seconds>:<userId>"`` and
``credential = base64(HMAC-SHA1(secret, username))``, which the TURN server checks without any
call back to us and refuses once the expiry has passed.  So the secret never leaves the servers,
a leaked credential is good for ``ttl`` seconds only, and coturn's logs name the user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

# host: a name or IPv4 address, or an IPv6 address in brackets (RFC 7064 / RFC 7065 URIs)
_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
_STUN_URL = re.compile(rf"stun:(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?")
_TURN_URL = re.compile(
    rf"turns?:(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?(?:\?transport=(?:udp|tcp))?"
)


def _parse_urls(text: str, pattern: re.Pattern[str], kinds: str, example: str) -> tuple[str, ...]:
    urls = tuple(u.strip() for u in text.split(",") if u.strip())
    for url in urls:
        m = pattern.fullmatch(url)
        bad_port = m is not None and m["port"] is not None and not 0 < int(m["port"]) < 65536
        if m is None or bad_port:
            which = f": {url!r} is not" if len(urls) > 1 else ""
            raise ValueError(f"must be {kinds} URLs like {example}, ports 1-65535{which}")
    return urls


def parse_stun_urls(text: str) -> tuple[str, ...]:
    """Comma-separated ``stun:host[:port]`` URLs (empty: none)."""
    return _parse_urls(text, _STUN_URL, "stun:", "stun:stun.example.org:3478")


def parse_turn_urls(text: str) -> tuple[str, ...]:
    """Comma-separated ``turn:``/``turns:host[:port][?transport=udp|tcp]`` URLs (empty: none)."""
    return _parse_urls(
        text, _TURN_URL, "turn: or turns:", "turn:turn.example.org:3478?transport=udp"
    )


def turn_username(user_id: str, expiry: int) -> str:
    """coturn's REST API user name: the expiry (unix seconds), ``:``, the user it is for."""
    return f"{expiry}:{user_id}"


def turn_credential(secret: str, username: str) -> str:
    """coturn's REST API password: ``base64(HMAC-SHA1(secret, username))``."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True, slots=True)
class IceServers:
    """What to put in ``iceServers``: the configured URLs, and the TURN secret to sign with."""

    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = field(default="", repr=False)  # kept out of logs and the console
    turn_ttl: int = 3600

    def __post_init__(self) -> None:
        if self.turn_urls and not self.turn_secret:
            raise ValueError("TURN URLs need a secret to sign the credentials with")

    def __bool__(self) -> bool:
        """False when nothing is configured: then ``iceServers`` is left out of the frames."""
        return bool(self.stun_urls or self.turn_urls)

    def for_user(self, user_id: str, now: float) -> list[dict[str, Any]]:
        """RTCIceServer objects for ``user_id`` at ``now`` (unix seconds, the reactor's clock):
        one entry for the STUN URLs, one with fresh credentials for the TURN URLs."""
        servers: list[dict[str, Any]] = []
        if self.stun_urls:
            servers.append({"urls": list(self.stun_urls)})
        if self.turn_urls:
            username = turn_username(user_id, int(now) + self.turn_ttl)
            servers.append(
                {
                    "urls": list(self.turn_urls),
                    "username": username,
                    "credential": turn_credential(self.turn_secret, username),
                }
            )
        return servers
