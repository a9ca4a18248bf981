"""Every chat message passes here: classify (per-sender window), then escalate with the user's
strikes, which live in the engine so that they hold across instances and reconnects.

Strikes are counted per user id and per abuse key (``strikes:warn:user:{id}``,
``strikes:warn:ip:{key}``, and ``strikes:block:…``; the key of an IPv6 client is its /64, see
``anygle.clientip``); the larger of the two counts, so a reconnect — from another address of the
same network too — does not wipe the slate.  Each counter expires ``strike_ttl`` seconds after its
last strike (decay).

Bans are proportionate: a moderation ban bans the user; it bans the abuse key as well only on a
zero-tolerance *rule* match, for ``ip_ban_ttl``, and never when the key is shared.  A key is
shared when ``shared_key_connections`` or more connections came from it within an hour
(``keyseen:{key}``, counted at every connection, TTL an hour from the last one): a school's NAT,
a carrier's CGNAT.  Behind a shared key the key's strike counts are not read either, so one
user's strikes never escalate another's.  The console lists the automatic bans of this instance
with their evidence (``autobans()``) and lifts them (``lift(n)``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from anygle.engine.base import EngineUnavailable, ModerationStore
from anygle.limits import AbuseKeyTable
from anygle.moderation import Action, Classifier, EscalationPolicy, SenderWindow, Verdict
from anygle.moderation.verdict import RULE, Severity

if TYPE_CHECKING:
    from anygle.session import Session

_log = Logger(namespace="anygle.moderation")
SEEN_TTL = 3600.0  # s: keyseen:{key} counts the connections of the last hour (see above)
AUTOBANS_KEPT = 200  # automatic bans the console can list, per instance
# What the teen reads when a stranger's conversation enters the grey zone (message delivered).
SAFETY_NOTICES = {
    "grooming": "Heads up: this stranger is asking the kind of things people ask to get close to "
    "teens online. You don't have to answer. Never share where you live, your school or your "
    "accounts, and skip or report them if anything feels off.",
    "chat_ended": "We ended this chat: the stranger kept asking things people ask to get close to "
    "teens online. You did nothing wrong. Never share where you live, your school or your "
    "accounts with someone you met here.",
}


def notice(kind: str) -> dict[str, Any]:
    """A ``safety_notice`` frame (our extension, docs/protocol.md)."""
    return {"type": "safety_notice", "data": {"kind": kind, "message": SAFETY_NOTICES[kind]}}


@dataclass(frozen=True, slots=True)
class ScreeningSettings:
    protect_adults: bool = False  # personal-info blocking for adults too
    ban_ttl: float | None = None  # a user's moderation ban: None = for good
    ip_ban_ttl: float = 86400.0  # an abuse key's ban (zero-tolerance rule evidence only)
    shared_key_connections: int = 5  # connections within an hour that make a key shared


@dataclass(frozen=True, slots=True)
class AutoBan:
    """One automatic moderation ban, as the console lists it."""

    at: float
    user_id: str
    ip: str
    abuse_key: str
    reason: str
    evidence: str | None
    basis: str
    ip_banned: bool
    key_shared: bool

    def describe(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "user": self.user_id,
            "ip": self.ip,
            "abuseKey": self.abuse_key,
            "reason": self.reason,
            "evidence": self.evidence,
            "basis": self.basis,
            "ipBanned": self.ip_banned,
            "keyShared": self.key_shared,
        }


@dataclass(eq=False)
class Screening:
    classifier: Classifier
    engine: ModerationStore  # strikes, keyseen counts and bans: all this needs of the engine
    policy: EscalationPolicy = field(default_factory=EscalationPolicy)
    settings: ScreeningSettings = field(default_factory=ScreeningSettings)
    abuse_keys: AbuseKeyTable | None = None  # holds a key while its strikes live
    autobans: deque[AutoBan] = field(default_factory=lambda: deque(maxlen=AUTOBANS_KEPT))

    def verdict(self, session: Session, content: str, now: float) -> Verdict:
        """Classify one message in the context of its sender's recent ones (cheap, synchronous)."""
        assert session.prefs is not None
        window = session.moderation_window
        if window is None:
            window = session.moderation_window = SenderWindow(self.classifier)
        teen = session.prefs.age_category == "teen"
        verdict: Verdict = window.check(
            content,
            now,
            protect_personal_info=teen or self.settings.protect_adults,
            moderated=session.prefs.queue_type == "moderated",
            teen=teen,
            chat=session.room_id,
        )
        return verdict

    def connected(self, session: Session) -> None:
        """Count a connection from the session's key (``keyseen``: is the key shared?)."""
        d = self.engine.incr(f"keyseen:{session.abuse_key}", SEEN_TTL)

        def failed(f: Failure) -> None:
            if not f.check(EngineUnavailable):  # a count lost in an outage is acceptable
                _log.failure("counting a connection of {key}", f, key=session.abuse_key)

        d.addErrback(failed)

    async def key_shared(self, key: str) -> bool:
        return await self.engine.get_count(f"keyseen:{key}") >= self.settings.shared_key_connections

    async def decide(self, session: Session, verdict: Verdict) -> Action:
        """Escalate: read the strikes, decide, count the new strike, record the action."""
        keys = {
            kind: (
                f"strikes:{kind}:user:{session.user_id}",
                f"strikes:{kind}:ip:{session.abuse_key}",
            )
            for kind in ("warn", "block")
        }
        shared = await self.key_shared(session.abuse_key)
        counts = {}
        for kind, (user_key, ip_key) in keys.items():
            counts[kind] = await self.engine.get_count(user_key)
            if not shared:  # behind a shared key, another user's strikes are not this one's
                counts[kind] = max(counts[kind], await self.engine.get_count(ip_key))
        action = self.policy.decide(verdict, warnings=counts["warn"], blocks=counts["block"])
        ttl = self.policy.strike_ttl
        for kind, counted in (("warn", action.count_warning), ("block", action.count_block)):
            if counted:
                if self.abuse_keys is not None:
                    self.abuse_keys.hold(session.abuse_key, ttl)
                for key in keys[kind][:1] if shared else keys[kind]:
                    await self.engine.incr(key, ttl)
        outcome = "ban" if action.ban else ("deliver" if action.deliver else "block")
        tier = verdict.severity.name.lower()
        self.engine.record_moderation(tier, verdict.category or "", outcome)
        _log.info(
            "moderation {outcome}: {user} ({ip}, {key}) {severity}/{category}: {evidence!r}",
            outcome=outcome,
            user=session.user_id,
            ip=session.ip,
            key=session.abuse_key,
            severity=verdict.severity.name,
            category=verdict.category,
            evidence=verdict.evidence,
        )
        return action

    async def ban(self, session: Session, verdict: Verdict, now: float) -> str:
        """Ban the user; the abuse key too only on zero-tolerance rule evidence and when the key
        is not shared."""
        reason = f"moderation: {verdict.category}"
        await self.engine.ban("users", session.user_id, reason, self.settings.ban_ttl)
        shared = await self.key_shared(session.abuse_key)
        ip_ban = verdict.severity is Severity.ZERO and verdict.basis == RULE and not shared
        if ip_ban:
            await self.engine.ban("ips", session.abuse_key, reason, self.settings.ip_ban_ttl)
        ban = AutoBan(
            now,
            session.user_id,
            session.ip,
            session.abuse_key,
            reason,
            verdict.evidence,
            verdict.basis,
            ip_ban,
            shared,
        )
        self.autobans.append(ban)
        _log.warn(
            "moderation ban: {user} ({ip}, key {key}{shared}) {reason} [{basis}] {evidence!r}; "
            "address {banned}",
            user=session.user_id,
            ip=session.ip,
            key=session.abuse_key,
            shared=", shared" if shared else "",
            reason=reason,
            basis=verdict.basis,
            evidence=verdict.evidence,
            banned="banned too" if ip_ban else "not banned",
        )
        return reason
