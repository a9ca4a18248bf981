"""The admin console's namespace: the live service and small, documented helpers.

Used by the SSH Manhole (:mod:`anygle.manhole`); plain functions, so they are tested without SSH.
A helper that asks the engine returns the answer when it is already there (memory engine), else the
Deferred — the Manhole prints its result when it fires.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.python.failure import Failure

from anygle.clientip import ban_target
from anygle.config import Settings
from anygle.engine.base import Engine
from anygle.hub import Hub
from anygle.model import Stats
from anygle.reports import export_header, export_lines, summary
from anygle.stats_view import overview


class ConsoleService(Protocol):
    """What the console uses of the service (:class:`anygle.tap.AnygleService`); the namespace
    also hands the whole service to the operator as ``service``."""

    settings: Settings
    hub: Hub
    engine: Engine

    def reload_moderation(self) -> str: ...


def build_namespace(service: ConsoleService) -> dict[str, Any]:
    hub, prefix = service.hub, service.settings.ipv6_prefix

    def stats() -> Any:
        """Service-wide figures (all instances on the redis engine) plus this instance's."""

        def shape(s: Stats) -> dict[str, Any]:
            local = {
                "instance": service.settings.instance_id,
                "connections": len(hub.sessions),
                "abuseKeys": hub.admission.keys.summary(),
            }
            redis = hub.redis()
            if redis is not None:  # the Redis this instance talks to
                local["redis"] = redis
            return {**overview(s), "local": local}

        return settled(hub.stats().addCallback(shape))

    def queues() -> Any:
        """Waiting users per queue (``teen:video:moderated`` …)."""
        return settled(hub.stats().addCallback(lambda s: dict(s.queues)))

    def users() -> list[dict[str, Any]]:
        """Users connected to this instance."""
        return [_describe(s) for s in hub.sessions.values()]

    def user(user_id: str) -> dict[str, Any] | None:
        """One user connected to this instance, or None."""
        session = hub.sessions.get(user_id)
        return _describe(session) if session is not None else None

    def kick(user_id: str, reason: str = "kicked by an operator") -> bool:
        """Close a local user's connection (their partner is told)."""
        if user_id not in hub.sessions:
            return False
        hub.on_kick(user_id, "BANNED", reason)
        return True

    def ban_user(user_id: str, ttl: float | None = None, reason: str = "banned") -> Any:
        """``banned:users:{id}`` for ``ttl`` s (None: for good); a connected user is closed."""
        return _ban("users", user_id, ttl, reason)

    def ban_ip(ip: str, ttl: float | None = None, reason: str = "banned") -> Any:
        """``banned:ips:{key}`` for ``ttl`` s (None: for good); its connected users are closed.
        An address bans its abuse key (IPv6: its /64); ``addr/128`` one address; an IPv6 /64,
        /56 or /48 that network."""
        return _ban("ips", ban_target(ip, prefix), ttl, reason)

    def unban_user(user_id: str) -> Any:
        """Lift a user ban; True if there was one."""
        return settled(hub.unban("users", user_id))

    def unban_ip(ip: str) -> Any:
        """Lift the IP ban ``ban_ip(ip)`` would set (and one of the exact address); True if
        there was one."""
        names = dict.fromkeys((ban_target(ip, prefix), ip.strip()))
        d = gatherResults([hub.unban("ips", name) for name in names], consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, FirstError) else f)
        return settled(d.addCallback(any))

    def _ban(kind: str, value: str, ttl: float | None, reason: str) -> Any:
        d = Deferred.fromCoroutine(hub.ban(kind, value, reason, ttl))
        expiry = f" for {ttl:g} s" if ttl else " (no expiry)"
        return settled(d.addCallback(lambda _: f"banned:{kind}:{value} = {reason!r}{expiry}"))

    def reports(limit: int = 20) -> Any:
        """The last reports of a partner, newest first, one short line each."""
        return settled(hub.reports(limit).addCallback(lambda rs: [summary(r) for r in rs]))

    def report(report_id: str) -> Any:
        """One report in full (reporter, reported, reason, details, room, the messages), or None."""
        return settled(hub.get_report(report_id))

    def autobans(limit: int = 20) -> list[dict[str, Any]]:
        """This instance's last automatic moderation bans, newest first (``n`` for ``lift``):
        user, address, abuse key, reason, evidence, basis, whether the address was banned too
        and whether its key was shared."""
        screening = hub.screening
        if screening is None:
            return []
        bans = list(reversed(screening.autobans))[:limit]
        return [{"n": n, **ban.describe()} for n, ban in enumerate(bans)]

    def lift(n: int) -> Any:
        """Lift automatic ban ``n`` of ``autobans()``: the user's ban and, if it set one, the
        address's; True if either was still in force."""
        screening = hub.screening
        bans = list(reversed(screening.autobans)) if screening is not None else []
        if not 0 <= n < len(bans):
            raise IndexError(f"no automatic ban {n}: autobans() lists {len(bans)}")
        ban = bans[n]
        lifts = [hub.unban("users", ban.user_id)]
        if ban.ip_banned:
            lifts.append(hub.unban("ips", ban.abuse_key))
        d = gatherResults(lifts, consumeErrors=True)
        d.addErrback(lambda f: f.value.subFailure if isinstance(f.value, FirstError) else f)
        return settled(d.addCallback(any))

    def export_reports(path: str, limit: int = 200) -> Any:
        """Write the last ``limit`` reports' transcripts to ``path`` for labelling, one reported
        message a line in the training format (``label<TAB>who<TAB>tags<TAB>text``, label ``?``:
        replace it; ``tools/train_moderation.py --extra PATH`` trains on the labelled lines)."""

        def write(records: list[dict[str, Any]]) -> str:
            lines = [export_header()]
            for r in records:
                lines.extend(export_lines(r))
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            return f"{len(lines) - 1} messages of {len(records)} reports written to {path}"

        ids = hub.reports(limit).addCallback(lambda rs: [r["reportId"] for r in rs])
        full = ids.addCallback(lambda rids: gatherResults([hub.get_report(i) for i in rids]))
        return settled(full.addCallback(lambda rs: write([r for r in rs if r])))

    def reload_moderation() -> str:
        """Re-read the moderation rule files (as SIGHUP does)."""
        return service.reload_moderation()

    namespace: dict[str, Any] = {
        "service": service,
        "hub": hub,
        "engine": service.engine,
        "settings": service.settings,
    }
    helpers = [
        stats,
        queues,
        users,
        user,
        kick,
        ban_user,
        ban_ip,
        unban_user,
        unban_ip,
        reports,
        report,
        export_reports,
        autobans,
        lift,
        reload_moderation,
    ]
    namespace.update({fn.__name__: fn for fn in helpers})

    def help_() -> str:
        """This list."""
        return "\n".join(f"{fn.__name__}: {(fn.__doc__ or '').strip()}" for fn in helpers)

    namespace["helpers"] = help_
    return namespace


def settled(d: Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (re-raising its failure), else the Deferred."""
    if not d.called or isinstance(d.result, Deferred):
        return d
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def _describe(session: Any) -> dict[str, Any]:
    return {
        "userId": session.user_id,
        "ip": session.ip,
        "abuseKey": session.abuse_key,
        "state": session.state,
        "queue": session.prefs.queue if session.prefs else None,
        "roomId": session.room_id,
        "partnerId": session.partner_id,
    }
