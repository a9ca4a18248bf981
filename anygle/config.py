"""Settings: one table of options, resolved as command line > environment > config file > default.

Every option ``--some-name`` can also be given as ``ANYGLE_SOME_NAME`` in the environment or as
``some-name = …`` in the ``[anygle]`` section of the config file (``--config PATH``,
``ANYGLE_CONFIG``, else ``/etc/anygle/anygle.conf`` when present: never a path that depends on the
current directory).  Values are checked here, so a bad one is a one-line error wherever it came
from.  ``OPTIONS`` is the one table: the ``Settings`` defaults are parsed from it, and a test checks
that ``etc/anygle.conf`` and the README's table agree with it.  Durations are in seconds
(fractions allowed; ``100ms`` is accepted too).
"""

from __future__ import annotations

import configparser
import difflib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from anygle.clientip import DEFAULT_IPV6_PREFIX, check_ipv6_prefix
from anygle.ice import parse_stun_urls, parse_turn_urls
from anygle.limits import DEFAULT_MAX_ABUSE_KEYS, DEFAULT_SPEC
from anygle.redisurl import RedisAddress, parse_sentinels, redacted

DEFAULT_CONFIG = "/etc/anygle/anygle.conf"
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


def _seconds(
    minimum: float, maximum: float | None = None, *, strict: bool = False
) -> Callable[[str], float]:
    """A duration in seconds; ``250ms`` and ``5s`` are accepted too.  ``maximum`` catches a value
    still written in the milliseconds that two options once took (``match-interval = 100``)."""
    bounds = _number(float, minimum, strict=strict)

    def parse(text: str) -> float:
        scale = 1.0
        if text.endswith("ms"):
            text, scale = text[:-2].strip(), 0.001
        elif text.endswith("s"):
            text = text[:-1].strip()
        value: float = bounds(text) * scale
        if maximum is not None and value > maximum:
            raise ValueError(f"must be <= {maximum:g} (seconds; write 250ms for milliseconds)")
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
    if not text.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must be a redis://host:port/db, rediss://… (TLS) or unix:///path URL")
    RedisAddress.parse(text)  # a bad port or db is refused here, with the other options
    return text


def _sentinels(text: str) -> str:
    parse_sentinels(text)
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


def _ws_url(text: str) -> str:
    if text and not text.startswith(("ws://", "wss://")):
        raise ValueError("must be empty or a ws:// or wss:// URL")
    return text


def _origins(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str
    # How --help and the README show an empty default ("off", "hostname-pid"); else the default.
    shown: str = ""
    # A file path: relative paths in a config file are taken from the file's directory.
    path: bool = False

    @property
    def shown_default(self) -> str:
        return self.shown or self.default


OPTIONS: tuple[Option, ...] = (
    Option("ws", "tcp:3001", _endpoint, "WebSocket listener (Twisted endpoint string)"),
    Option("http", "tcp:3000", _endpoint, "HTTP listener: the web client, /health, /stats"),
    Option("engine", "memory", _choice("memory", "redis"), "state engine: memory or redis"),
    Option("redis", "redis://127.0.0.1:6379/0", _redis_url, "Redis URL (redis engine)"),
    Option(
        "redis-sentinels",
        "",
        _sentinels,
        "host:port of Redis Sentinels that name the primary (then --redis gives password, db)",
        shown="none",
    ),
    Option("redis-master", "mymaster", _text, "the primary's name at the sentinels"),
    Option(
        "redis-tls-ca",
        "",
        _text,
        "CA certificates (PEM) that sign a rediss:// server's certificate",
        shown="the system's CAs",
        path=True,
    ),
    Option(
        "redis-tls-cert",
        "",
        _text,
        "client certificate (PEM) for a rediss:// server that asks for one",
        shown="none",
        path=True,
    ),
    Option(
        "redis-tls-key", "", _text, "the client certificate's key (PEM)", shown="none", path=True
    ),
    Option("instance-id", "", _text, "name of this instance", shown="hostname-pid"),
    Option("match-interval", "0.1", _seconds(0, 10, strict=True), "matcher tick, s"),
    Option("interest-timeout", "5", _seconds(0, 600), "s to wait for a shared interest"),
    Option("rematch-cooldown", "60", _seconds(0), "s before two who skipped may rematch"),
    Option("stats-interval", "5", _seconds(0, strict=True), "s between stats pushes"),
    Option("searching-interval", "3", _seconds(0, strict=True), "s between searching updates"),
    Option("ping-interval", "25", _seconds(0), "s between WebSocket pings (0: off)"),
    Option("ping-timeout", "10", _seconds(0, strict=True), "s to wait for a pong"),
    Option(
        "resume-grace",
        "30",
        _seconds(0, 3600),
        "s a user whose connection dropped may resume its session (0: no resume)",
    ),
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
        "allowed-origins",
        "",
        _origins,
        "comma-separated Origin patterns for browsers",
        shown="any origin",
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
        shown="built-in rules only",
        path=True,
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
        _seconds(0),
        "s a moderation ban (zero tolerance, repeated blocks) lasts (0: for good)",
    ),
    Option(
        "ip-ban-ttl",
        "86400",
        _seconds(0, strict=True),
        "s an automatic address ban (zero-tolerance rule evidence only) lasts",
    ),
    Option(
        "shared-key-connections",
        "5",
        _number(int, 1),
        "connections within an hour that mark an address shared (no moderation address ban)",
    ),
    Option(
        "report-retention",
        "2592000",
        _seconds(0, strict=True),
        "s a user's report of a partner is kept (default 30 days)",
    ),
    Option(
        "report-ban-reporters",
        "3",
        _number(int, 0),
        "reports from this many distinct addresses within an hour ban a user (0: never)",
    ),
    Option(
        "report-ban-ttl",
        "86400",
        _seconds(0),
        "s a ban by reports lasts (0: for good)",
    ),
    Option(
        "stun-urls", "", parse_stun_urls, "comma-separated stun: URLs for iceServers", shown="none"
    ),
    Option(
        "turn-urls",
        "",
        parse_turn_urls,
        "comma-separated turn:/turns: URLs for iceServers (needs --turn-secret)",
        shown="none",
    ),
    Option(
        "turn-secret",
        "",
        _text,
        "the TURN server's static-auth-secret, to sign credentials (keep it out of ps: "
        "use the config file or ANYGLE_TURN_SECRET)",
        shown="none",
    ),
    Option("turn-ttl", "3600", _number(int, 0, strict=True), "s a TURN credential is valid"),
    Option("manhole", "", _optional_endpoint, "SSH admin console endpoint", shown="off"),
    Option(
        "manhole-keys",
        "/etc/anygle/manhole_authorized_keys",
        _text,
        "authorized_keys file for the console",
        path=True,
    ),
    Option(
        "manhole-host-key",
        "/var/lib/anygle/manhole_host_key",
        _text,
        "console host key (generated if absent)",
        path=True,
    ),
    Option("web-client", "yes", _yes_no, "serve the browser client at GET / on the HTTP listener"),
    Option(
        "web-client-ws-url",
        "",
        _ws_url,
        "WebSocket URL the web client connects to",
        shown="worked out per request",
    ),
    Option(
        "shutdown-timeout",
        "8",
        _seconds(0, strict=True),
        "s a stop waits for clients to close before it gives up",
    ),
)
_BY_NAME = {o.name: o for o in OPTIONS}


def default(name: str) -> Any:
    """The parsed default of option ``name``: the ``Settings`` defaults come from ``OPTIONS``.

    Endpoint strings are taken as they are: checking one imports the reactor, which must not
    happen at import time (twistd installs the reactor it was asked for after importing us);
    ``resolve`` checks them, and a test checks every default."""
    option = _BY_NAME[name]
    if option.parse in (_endpoint, _optional_endpoint):
        return option.default
    return option.parse(option.default)


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved, typed settings (attribute = option name with ``_``; durations in s)."""

    ws: str = default("ws")
    http: str = default("http")
    engine: str = default("engine")
    redis: str = default("redis")
    redis_sentinels: str = default("redis-sentinels")
    redis_master: str = default("redis-master")
    redis_tls_ca: str = default("redis-tls-ca")
    redis_tls_cert: str = default("redis-tls-cert")
    redis_tls_key: str = default("redis-tls-key")
    instance_id: str = default("instance-id")
    match_interval: float = default("match-interval")
    interest_timeout: float = default("interest-timeout")
    rematch_cooldown: float = default("rematch-cooldown")
    stats_interval: float = default("stats-interval")
    searching_interval: float = default("searching-interval")
    ping_interval: float = default("ping-interval")
    ping_timeout: float = default("ping-timeout")
    resume_grace: float = default("resume-grace")
    trusted_proxies: str = default("trusted-proxies")
    ipv6_prefix: int = default("ipv6-prefix")
    max_abuse_keys: int = default("max-abuse-keys")
    rate_limit: int = default("rate-limit")
    message_limits: dict[str, tuple[float, float]] = field(
        default_factory=lambda: default("message-limits")
    )
    max_connections_per_ip: int = default("max-connections-per-ip")
    allowed_origins: tuple[str, ...] = default("allowed-origins")
    max_queued_bytes: int = default("max-queued-bytes")
    moderation_rules: str = default("moderation-rules")
    protect_adults: bool = default("protect-adults")
    ban_ttl: float = default("ban-ttl")
    ip_ban_ttl: float = default("ip-ban-ttl")
    shared_key_connections: int = default("shared-key-connections")
    report_retention: float = default("report-retention")
    report_ban_reporters: int = default("report-ban-reporters")
    report_ban_ttl: float = default("report-ban-ttl")
    stun_urls: tuple[str, ...] = default("stun-urls")
    turn_urls: tuple[str, ...] = default("turn-urls")
    turn_secret: str = field(default=default("turn-secret"), repr=False)  # out of logs, console
    turn_ttl: int = default("turn-ttl")
    manhole: str = default("manhole")
    manhole_keys: str = default("manhole-keys")
    manhole_host_key: str = default("manhole-host-key")
    web_client: bool = default("web-client")
    web_client_ws_url: str = default("web-client-ws-url")
    shutdown_timeout: float = default("shutdown-timeout")
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
    others = [s for s in parser.sections() if s != SECTION]
    if others:
        raise ConfigError(f"{path}: unknown section(s) {_unknown(others, [SECTION], '[{}]')}")
    if not parser.has_section(SECTION):
        return {}
    values = dict(parser.items(SECTION))
    unknown = sorted(set(values) - set(_BY_NAME))
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) in [{SECTION}]: {_unknown(unknown, list(_BY_NAME))}"
        )
    return values


# ANYGLE_* variables that are not options: read by the moderation scanner, and the config path;
# ANYGLE_TEST_* are the test suite's own.
OTHER_VARIABLES = ("ANYGLE_CONFIG", "ANYGLE_HS_CACHE")


def check_environment(env: Mapping[str, str]) -> None:
    """Refuse ``ANYGLE_*`` variables that name no option: a misspelled one would otherwise
    leave its setting at the default without a word."""
    known = [env_name(o.name) for o in OPTIONS] + list(OTHER_VARIABLES)
    unknown = sorted(
        name
        for name in env
        if name.startswith("ANYGLE_") and name not in known and not name.startswith("ANYGLE_TEST_")
    )
    if unknown:
        strip = len("ANYGLE_")  # compared without it, or every name looks alike
        names = _unknown([n[strip:] for n in unknown], [k[strip:] for k in known], "ANYGLE_{}")
        raise ConfigError(f"unknown environment variable(s) {names}")


def _unknown(names: list[str], known: list[str], shown: str = "{}") -> str:
    """``a (did you mean b?), c`` for a message about unknown ``names``."""
    parts = []
    for name in names:
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean {shown.format(near[0])}?)" if near else ""
        parts.append(shown.format(name) + hint)
    return ", ".join(parts)


def _check_turn(values: Mapping[str, Any]) -> None:
    """TURN URLs and the secret come together: one without the other is a mistake."""
    if values["turn_urls"] and not values["turn_secret"]:
        raise ConfigError("--turn-urls needs --turn-secret (the TURN server's static-auth-secret)")
    if values["turn_secret"] and not values["turn_urls"]:
        raise ConfigError("--turn-secret is set but --turn-urls is empty: nothing to sign for")


def _check_redis_tls(values: Mapping[str, Any]) -> None:
    """The TLS files go with a rediss:// URL, a client certificate with its key; with the redis
    engine they must be usable now (not at the first connection)."""
    files = {k: values[f"redis_tls_{k}"] for k in ("ca", "cert", "key")}
    address = RedisAddress.parse(values["redis"])
    if any(files.values()) and not address.tls:
        raise ConfigError(f"--redis-tls-* need a rediss:// URL, not {redacted(values['redis'])}")
    if bool(files["cert"]) != bool(files["key"]):
        raise ConfigError("--redis-tls-cert and --redis-tls-key go together")
    if address.tls and values["engine"] == "redis":
        try:
            address.with_tls_files(files["ca"], files["cert"], files["key"]).ssl_context()
        except ValueError as e:
            raise ConfigError(str(e)) from None


def resolve(
    cli: Mapping[str, str | None],
    env: Mapping[str, str] = os.environ,
    config_path: str | None = None,
) -> Settings:
    """Merge the sources (command line > environment > config file > default) and check them."""
    check_environment(env)
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
        value = value.strip()
        if option.path and value and config_path and source.startswith(config_path):
            value = os.path.join(os.path.dirname(os.path.abspath(config_path)), value)
        try:
            values[attr(option.name)] = option.parse(value)
        except ValueError as e:
            where = f" (from {source})" if source else ""
            raise ConfigError(f"--{option.name}: {redacted(value)!r} {e}{where}") from None
    _check_turn(values)
    _check_redis_tls(values)
    if not values["instance_id"]:
        values["instance_id"] = f"{socket.gethostname()}-{os.getpid()}"
    assert {f.name for f in fields(Settings)} == set(values)
    return Settings(**values)
