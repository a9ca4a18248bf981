"""Settings: one table of options, resolved as command line > environment > config file > default.

Every option ``--some-name`` can also be given as ``ANYGLE_SOME_NAME`` in the environment or as
``some-name = …`` in the ``[anygle]`` section of the config file (``etc/anygle.conf`` when present,
or ``--config PATH``).  Values are checked here, so a bad one is a one-line error wherever it came
from.
"""

from __future__ import annotations

import configparser
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from anygle.clientip import DEFAULT_IPV6_PREFIX, check_ipv6_prefix
from anygle.limits import DEFAULT_MAX_ABUSE_KEYS, DEFAULT_SPEC, MESSAGE_LIMITS

DEFAULT_CONFIG = "etc/anygle.conf"
SECTION = "anygle"


class ConfigError(ValueError):
    """A bad setting; the message names the option and where the value came from."""


def _number(kind: type, minimum: float, *, strict: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"must be {'an integer' if kind is int else 'a number'}") from None
        if value < minimum or (strict and value == minimum):
            raise ValueError(f"must be {'>' if strict else '>='} {minimum}")
        return value

    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _endpoint(text: str) -> str:
    """A Twisted server endpoint string (``tcp:3001:interface=127.0.0.1``, ``systemd:…``)."""
    from twisted.internet import endpoints, reactor

    try:
        endpoints.serverFromString(reactor, text)
    except Exception as e:
        raise ValueError(f"is not a server endpoint ({type(e).__name__}: {e})") from None
    return text


def _optional_endpoint(text: str) -> str:
    return "" if text in ("", "off", "none") else _endpoint(text)


def _redis_url(text: str) -> str:
    if not text.startswith(("redis://", "unix://")):
        raise ValueError("must be a redis://host:port/db or unix:///path URL")
    return text


def _text(text: str) -> str:
    return text


def _networks(text: str) -> str:
    from anygle.clientip import parse_networks

    try:
        parse_networks(text)
    except ValueError as e:
        raise ValueError(f"is not a list of CIDRs ({e})") from None
    return text


def _ipv6_prefix(text: str) -> int:
    return check_ipv6_prefix(_number(int, 0)(text))


def _message_limits(text: str) -> dict[str, tuple[float, float]]:
    from anygle.limits import parse_message_limits

    return parse_message_limits(text)


def _yes_no(text: str) -> bool:
    value = text.lower()
    if value in ("yes", "true", "on", "1"):
        return True
    if value in ("no", "false", "off", "0"):
        return False
    raise ValueError("must be yes or no")


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str


OPTIONS: tuple[Option, ...] = (
    Option("ws", "tcp:3001", _endpoint, "WebSocket listener (Twisted endpoint string)"),
    Option("http", "tcp:3000", _endpoint, "HTTP listener for /health and /stats"),
    Option("engine", "memory", _choice("memory", "redis"), "state engine: memory or redis"),
    Option("redis", "redis://127.0.0.1:6379/0", _redis_url, "Redis URL (redis engine)"),
    Option("instance-id", "", _text, "name of this instance (default: hostname-pid)"),
    Option("match-interval", "100", _number(int, 0, strict=True), "matcher tick, ms"),
    Option("interest-timeout", "5000", _number(int, 0), "ms to wait for a shared interest"),
    Option("rematch-cooldown", "60", _number(float, 0), "s before two who skipped may rematch"),
    Option("stats-interval", "5", _number(float, 0, strict=True), "s between stats pushes"),
    Option(
        "searching-interval", "3", _number(float, 0, strict=True), "s between searching updates"
    ),
    Option("ping-interval", "25", _number(float, 0), "s between WebSocket pings (0: off)"),
    Option("ping-timeout", "10", _number(float, 0, strict=True), "s to wait for a pong"),
    Option(
        "trusted-proxies",
        "127.0.0.0/8,::1/128",
        _networks,
        "CIDRs whose X-Forwarded-For/X-Real-IP is believed",
    ),
    Option(
        "ipv6-prefix",
        str(DEFAULT_IPV6_PREFIX),
        _ipv6_prefix,
        "per-IP limits and bans count an IPv6 client by its network of this many bits (16-128)",
    ),
    Option(
        "max-abuse-keys",
        str(DEFAULT_MAX_ABUSE_KEYS),
        _number(int, 0),
        "client addresses/networks tracked at once; beyond, new ones get 503 (0: no cap)",
    ),
    Option(
        "rate-limit",
        "100",
        _number(int, 0),
        "HTTP requests and WebSocket handshakes per minute per IP (0: off)",
    ),
    Option(
        "message-limits",
        DEFAULT_SPEC,
        _message_limits,
        "per-connection kind=rate/burst token buckets, or off",
    ),
    Option(
        "max-connections-per-ip",
        "5",
        _number(int, 0),
        "open WebSocket connections per IP, all instances (0: off)",
    ),
    Option(
        "allowed-origins", "", _origins, "comma-separated Origin patterns for browsers (empty: all)"
    ),
    Option(
        "max-queued-bytes",
        "1048576",
        _number(int, 65536),
        "bytes queued for a client that stopped reading before it is closed",
    ),
    Option(
        "moderation-rules",
        "",
        _text,
        "extra moderation rule file or directory (extends the built-in rules; SIGHUP reloads)",
    ),
    Option(
        "protect-adults",
        "no",
        _yes_no,
        "block personal information (phone, e-mail, address, handles) for adults too",
    ),
    Option(
        "ban-ttl",
        "0",
        _number(float, 0),
        "s a moderation ban (zero tolerance, repeated blocks) lasts (0: for good)",
    ),
    Option("manhole", "", _optional_endpoint, "SSH admin console endpoint (empty: off)"),
    Option(
        "manhole-keys", "etc/manhole_authorized_keys", _text, "authorized_keys file for the console"
    ),
    Option(
        "manhole-host-key", "var/manhole_host_key", _text, "console host key (generated if absent)"
    ),
    Option(
        "shutdown-timeout",
        "8",
        _number(float, 0, strict=True),
        "s a stop waits for clients to close before it gives up",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved, typed settings (attribute = option name with ``_``)."""

    ws: str = "tcp:3001"
    http: str = "tcp:3000"
    engine: str = "memory"
    redis: str = "redis://127.0.0.1:6379/0"
    instance_id: str = ""
    match_interval: int = 100
    interest_timeout: int = 5000
    rematch_cooldown: float = 60.0
    stats_interval: float = 5.0
    searching_interval: float = 3.0
    ping_interval: float = 25.0
    ping_timeout: float = 10.0
    trusted_proxies: str = "127.0.0.0/8,::1/128"
    ipv6_prefix: int = DEFAULT_IPV6_PREFIX
    max_abuse_keys: int = DEFAULT_MAX_ABUSE_KEYS
    rate_limit: int = 100
    message_limits: dict[str, tuple[float, float]] = field(
        default_factory=lambda: dict(MESSAGE_LIMITS)
    )
    max_connections_per_ip: int = 5
    allowed_origins: tuple[str, ...] = ()
    max_queued_bytes: int = 1048576
    moderation_rules: str = ""
    protect_adults: bool = False
    ban_ttl: float = 0.0
    manhole: str = ""
    manhole_keys: str = "etc/manhole_authorized_keys"
    manhole_host_key: str = "var/manhole_host_key"
    shutdown_timeout: float = 8.0
    config: str | None = None


def attr(name: str) -> str:
    return name.replace("-", "_")


def env_name(name: str) -> str:
    return "ANYGLE_" + attr(name).upper()


def read_config_file(path: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"--config: cannot read {path}: {e.strerror}") from None
    except configparser.Error as e:
        raise ConfigError(f"--config: {path} is not a valid config file: {e.message}") from None
    if not parser.has_section(SECTION):
        return {}
    values = dict(parser.items(SECTION))
    known = {o.name for o in OPTIONS}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) in [{SECTION}]: {', '.join(unknown)}")
    return values


def resolve(
    cli: Mapping[str, str | None],
    env: Mapping[str, str] = os.environ,
    config_path: str | None = None,
) -> Settings:
    """Merge the sources (command line > environment > config file > default) and check them."""
    if config_path is None:
        config_path = env.get("ANYGLE_CONFIG") or None
    if config_path is None and os.path.exists(DEFAULT_CONFIG):
        config_path = DEFAULT_CONFIG
    from_file = read_config_file(config_path) if config_path else {}
    values: dict[str, Any] = {"config": config_path}
    for option in OPTIONS:
        candidates = (
            (f"--{option.name}", cli.get(option.name)),
            (env_name(option.name), env.get(env_name(option.name))),
            (f"{config_path}: {option.name}", from_file.get(option.name)),
            ("", option.default),
        )
        source, value = next((s, v) for s, v in candidates if v is not None)
        try:
            values[attr(option.name)] = option.parse(value.strip())
        except ValueError as e:
            where = f" (from {source})" if source else ""
            raise ConfigError(f"--{option.name}: {value!r} {e}{where}") from None
    if not values["instance_id"]:
        values["instance_id"] = f"{socket.gethostname()}-{os.getpid()}"
    assert {f.name for f in fields(Settings)} == set(values)
    return Settings(**values)
