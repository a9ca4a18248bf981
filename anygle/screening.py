"""Every chat message passes here: classify (per-sender window), then escalate with the user's
strikes, which live in the engine so that they hold across instances and reconnects.

Strikes are counted per user id and per abuse key (``strikes:warn:user:{id}``,
``strikes:warn:ip:{key}``, and ``strikes:block:…``; the key of an IPv6 client is its /64, see
``anygle.clientip``); the larger of the two counts, so a reconnect — from another address of the
same network too — does not wipe the slate.  Each counter expires ``strike_ttl`` seconds after its
last strike (decay).  A moderation ban bans the user and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from twisted.logger import Logger

from anygle.engine.base import Engine
from anygle.limits import AbuseKeyTable
from anygle.moderation import Action, Classifier, EscalationPolicy, SenderWindow, Verdict

if TYPE_CHECKING:
    from anygle.session import Session

_log = Logger(namespace="anygle.moderation")


@dataclass(frozen=True, slots=True)
class ScreeningSettings:
    protect_adults: bool = False  # personal-info blocking for adults too
    ban_ttl: float | None = None  # zero tolerance / repeated blocks: None = for good


@dataclass(eq=False)
class Screening:
    classifier: Classifier
    engine: Engine
    policy: EscalationPolicy = field(default_factory=EscalationPolicy)
    settings: ScreeningSettings = field(default_factory=ScreeningSettings)
    abuse_keys: AbuseKeyTable | None = None  # holds a key while its strikes live

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
        )
        return verdict

    async def decide(self, session: Session, verdict: Verdict) -> Action:
        """Escalate: read the strikes, decide, count the new strike, record the action."""
        keys = {
            kind: (
                f"strikes:{kind}:user:{session.user_id}",
                f"strikes:{kind}:ip:{session.abuse_key}",
            )
            for kind in ("warn", "block")
        }
        counts = {}
        for kind, (user_key, ip_key) in keys.items():
            counts[kind] = max(
                await self.engine.get_count(user_key), await self.engine.get_count(ip_key)
            )
        action = self.policy.decide(verdict, warnings=counts["warn"], blocks=counts["block"])
        ttl = self.policy.strike_ttl
        for kind, counted in (("warn", action.count_warning), ("block", action.count_block)):
            if counted:
                if self.abuse_keys is not None:
                    self.abuse_keys.hold(session.abuse_key, ttl)
                for key in keys[kind]:
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

    async def ban(self, session: Session, verdict: Verdict) -> str:
        reason = f"moderation: {verdict.category}"
        await self.engine.ban("users", session.user_id, reason, self.settings.ban_ttl)
        await self.engine.ban("ips", session.abuse_key, reason, self.settings.ban_ttl)
        return reason
