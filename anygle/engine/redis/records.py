"""What the instances keep together besides users and rooms: stats, reports, bans, counters and
the abuse limits (connections per client, rates).

None of it needs the local users and rooms except two shortcuts: a ban check of a local user
reuses the last ``check_bans`` poll, and the connections this instance counted are registered
again when Redis comes back (:attr:`Records.conns`).  Keys: docs/operations.md "Keys".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack
from twisted.internet import defer
from twisted.python.failure import Failure

from anygle.engine.base import EngineConfig, EngineUnavailable, IpNames, ip_names
from anygle.engine.redis.local import LocalUser
from anygle.engine.redis.registration import Registration
from anygle.engine.redis.scripts import (
    CONNECTION_ERRORS,
    QUEUES,
    Commands,
    Status,
    first_error,
    ms,
    text,
)
from anygle.model import Stats
from anygle.reports import BAN_REASON, Report, ReportOutcome, record_from_hash

__all__ = ["Records"]


class Records:
    """The engine's stats, reports, bans, counters and limits (the engine's methods of the same
    names call these).  ``registration`` says when Redis may be used; ``users`` are the local
    users (the ban shortcut); ``clock`` gives the time written into Redis, ``reactor`` the
    time of the instance's own bookkeeping (see :class:`Registration`)."""

    def __init__(
        self,
        *,
        instance: str,
        config: EngineConfig,
        commands: Commands,
        status: Status,
        registration: Registration,
        users: Mapping[str, LocalUser],
        clock: Any,
        reactor: Any,
    ) -> None:
        self.instance = instance
        self.config = config
        self.commands = commands
        self.status = status
        self.registration = registration
        self.users = users
        self.clock = clock
        self.reactor = reactor
        self.total_matches = 0  # highest seen: registered again if Redis loses its data
        self.conns: dict[str, int] = {}  # abuse key -> connections counted by this instance
        self.bans_checked_at = -1e9  # reactor time of the last check_bans() that answered
        self.bans_seen: set[str] = set()  # local users it found banned
        self.last_stats: Stats | None = None

    # --- stats ----------------------------------------------------------------------------
    def stats(self) -> defer.Deferred[Stats]:
        d = self.commands.script("stats", *QUEUES)

        def done(reply: bytes) -> Stats:
            online, in_queue, chats, total, waits, queues = msgpack.unpackb(reply, raw=False)
            self.total_matches = max(self.total_matches, int(total))
            stats = Stats(
                total_online=int(online),
                in_queue=int(in_queue),
                active_chats=int(chats),
                avg_match_time=round(sum(waits) / len(waits), 1) if waits else 0.0,
                total_matches=int(total),
                queues={q: int(n) for q, n in queues.items()} if queues else {},
            )
            self.last_stats = stats
            return stats

        return d.addCallback(done).addCallback(self._with_counts)

    def _with_counts(self, stats: Stats) -> defer.Deferred[Stats]:
        """Add the ``stats:moderation`` hash (``{tier}:{category}:{outcome}`` → count) and the
        ``stats:reports`` hash (``received:{reason}``, ``blocks``)."""
        moderation = self._hash("stats:moderation")
        reports = self._hash("stats:reports")

        def add(counts: list[dict[str, str]]) -> Stats:
            stats.moderation = {k: int(v) for k, v in counts[0].items()}
            stats.reports = {
                k.partition(":")[2]: int(v)
                for k, v in counts[1].items()
                if k.startswith("received:")
            }
            stats.report_blocks = int(counts[1].get("blocks", 0))
            return stats

        d = defer.gatherResults([moderation, reports], consumeErrors=True)
        return d.addCallbacks(add, first_error)

    def _hash(self, key: str) -> defer.Deferred[dict[str, str]]:
        """``HGETALL key`` as text."""
        d = self.commands.raw("HGETALL", key).addErrback(self.commands.unavailable)

        def decode(reply: Any) -> dict[str, str]:
            pairs = (
                reply.items()
                if isinstance(reply, dict)
                else zip(reply[::2], reply[1::2], strict=True)
            )
            return {text(k): text(v) for k, v in pairs}

        return d.addCallback(decode)

    def record_moderation(self, tier: str, category: str, outcome: str) -> None:
        if not self.status.available:
            return  # a count lost in an outage is acceptable; the action itself is not
        d = self.commands.raw("HINCRBY", "stats:moderation", f"{tier}:{category}:{outcome}", 1)
        d.addErrback(lambda f: f.trap(EngineUnavailable, *CONNECTION_ERRORS))

    # --- reports (anygle/reports.py) ----------------------------------------------------------
    def report(self, report: Report) -> defer.Deferred[ReportOutcome]:
        c = self.config
        d = self.commands.script(
            "report",
            report.reporter_key,
            ms(self.clock.seconds()),
            max(1, ms(c.report_retention)),
            c.report_ban_reporters,
            max(1, ms(c.report_ban_window)),
            0 if c.report_ban_ttl is None else max(1, ms(c.report_ban_ttl)),
            self.instance,
            BAN_REASON,
            *report.hash_fields(),
        )

        def done(reply: bytes) -> ReportOutcome:
            result = msgpack.unpackb(reply, raw=False)
            if result[0] == "dup":
                return ReportOutcome(result[1], duplicate=True)
            return ReportOutcome(result[1], banned=bool(result[2]))

        return d.addCallback(done)

    def reports(self, limit: int) -> defer.Deferred[list[dict[str, Any]]]:
        if limit <= 0:
            return defer.succeed([])
        d = self.registration.require().addCallback(
            lambda _: self.commands.raw("ZREVRANGE", "reports", 0, limit - 1)
        )
        d.addErrback(self.commands.unavailable)

        def fetch(ids: list[bytes]) -> defer.Deferred[list[dict[str, Any] | None]]:
            return defer.gatherResults(
                [self.get_report(text(i)) for i in ids or ()], consumeErrors=True
            ).addErrback(first_error)

        return d.addCallback(fetch).addCallback(
            lambda records: [r for r in records if r is not None]
        )

    def get_report(self, report_id: str) -> defer.Deferred[dict[str, Any] | None]:
        d = self.registration.require().addCallback(lambda _: self._hash(f"report:{report_id}"))
        return d.addCallback(lambda fields: record_from_hash(fields) if fields else None)

    # --- counters and bans ----------------------------------------------------------------
    def incr(self, key: str, ttl: float) -> defer.Deferred[int]:
        return self.commands.script("incr", key, max(1, ms(ttl))).addCallback(int)

    def get_count(self, key: str) -> defer.Deferred[int]:
        if not self.status.available:
            return defer.fail(EngineUnavailable(self.status.reason))
        d = self.commands.raw("GET", f"count:{key}").addErrback(self.commands.unavailable)
        return d.addCallback(lambda v: int(v) if v is not None else 0)

    def get_ban(self, user_id: str | None, ips: IpNames = None) -> defer.Deferred[str | None]:
        """See :meth:`RedisEngine.get_ban`."""
        names = ip_names(ips)
        local = self.users.get(user_id) if user_id is not None else None
        if (
            local is not None
            and names[:1] == (local.ip,)
            and user_id not in self.bans_seen
            and self.reactor.seconds() - self.bans_checked_at < 2.0
        ):
            return defer.succeed(None)
        keys = []
        if user_id is not None:
            keys.append(f"banned:users:{user_id}")
        keys += [f"banned:ips:{name}" for name in names]
        if not keys:
            return defer.succeed(None)
        d = self.registration.require().addCallback(lambda _: self.commands.raw("MGET", *keys))
        d.addErrback(self.commands.unavailable)

        def first(values: list[bytes | None]) -> str | None:
            for v in values:
                if v is not None:
                    return v.decode("utf-8", "replace")
            return None

        return d.addCallback(first)

    def ban(self, kind: str, value: str, reason: str, ttl: float | None) -> defer.Deferred[None]:
        if kind not in ("users", "ips"):
            raise ValueError(f"bad ban kind {kind!r}")
        ttl_ms = 0 if ttl is None else max(1, ms(ttl))
        d = self.commands.script("ban", kind, value, reason, ttl_ms, self.instance)
        return d.addCallback(lambda _: None)

    def unban(self, kind: str, value: str) -> defer.Deferred[bool]:
        if not self.status.available:
            return defer.fail(EngineUnavailable(self.status.reason))
        d = self.commands.raw("DEL", f"banned:{kind}:{value}")
        d.addErrback(self.commands.unavailable)
        return d.addCallback(lambda n: bool(n))

    def check_bans(self, users: dict[str, IpNames]) -> defer.Deferred[dict[str, str]]:
        """See :meth:`RedisEngine.check_bans`."""
        if not users or not self.status.available:
            return defer.succeed({})
        items = [(u, ip_names(ips)) for u, ips in users.items()]
        ds = [
            self.commands.script("check_bans", msgpack.packb(items[i : i + 2000]))
            for i in range(0, len(items), 2000)
        ]

        asked_at = self.reactor.seconds()

        def found(replies: list[bytes]) -> dict[str, str]:
            banned = {
                u: r
                for reply in replies
                for u, r in msgpack.unpackb(reply, raw=False, unicode_errors="replace")
            }
            self.bans_checked_at, self.bans_seen = asked_at, set(banned)
            return banned

        def failed(f: Failure) -> dict[str, str]:
            first_error(f).trap(EngineUnavailable, *CONNECTION_ERRORS)
            return {}

        return defer.gatherResults(ds, consumeErrors=True).addCallbacks(found, failed)

    # --- abuse limits (shared by all instances) -------------------------------------------
    def rate(self, key: str, limit: int, window: float) -> defer.Deferred[bool]:
        now = ms(self.clock.seconds())
        d = self.commands.script("rate", key, limit, max(1, ms(window)), now)
        return d.addCallback(bool)

    def acquire_connection(self, key: str, limit: int) -> defer.Deferred[bool]:
        d = self.commands.script("acquire", key, limit, self.instance)

        def done(ok: int) -> bool:
            if ok:
                self.conns[key] = self.conns.get(key, 0) + 1
            return bool(ok)

        return d.addCallback(done)

    def release_connection(self, key: str) -> defer.Deferred[None]:
        count = self.conns.get(key, 0)
        if count <= 0:
            return defer.succeed(None)
        if count == 1:
            del self.conns[key]
        else:
            self.conns[key] = count - 1
        instance = self.instance
        return self.registration.online_or_not(
            lambda: self.commands.script("release", key, instance).addCallback(lambda _: None),
            lambda: None,  # offline: the counts are registered again on reconnect
        )
