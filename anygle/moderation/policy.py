"""Escalation: turn a Verdict plus a user's strike counts into what the server does.

The seed's flow is ``Warning 1 -> Warning 2 -> Warning 3 -> Block -> Ban``. Policy, per user:

* CLEAN: delivered, nothing counted.
* LOW (profanity, mild insults): delivered with a 'low' warning; not counted as a strike, so
  swearing alone never escalates to a block.
* MEDIUM (harassment, slurs, explicit content, grooming between adults): warnings 1 and 2
  are delivered with a 'medium' warning; from the 3rd warning on the message is blocked
  (and counted as a block too).
* HIGH (threats, doxing, a teen's personal info, grooming with a teen): blocked with a
  'high' warning, counted as a block.
* ZERO (sexual content involving minors, CSAM solicitation): blocked, user and IP banned,
  connection closed.
* Any block that brings the user's block count to ``ban_after_blocks`` bans.
* A conversation-level grooming decision (``conversation``) also ends the chat (``end_chat``).
* What a verdict rests on limits what it leads to (``Verdict.basis``): a block on the learned
  model alone (``model``) or on one grooming move (``signal``) is not counted as a strike, so
  no run of such blocks -- of ordinary lines the model misreads -- ever bans. Strikes come from
  rules (``rule``) and from conversation-level grooming decisions (``conversation``).

Strikes decay: the server stores both counters with a TTL of ``strike_ttl`` seconds, refreshed
on every new strike, so a user who behaves for an hour starts from zero again.
"""

from __future__ import annotations

from dataclasses import dataclass

from .verdict import CONVERSATION, MODEL, SIGNAL, Severity, Verdict


@dataclass(frozen=True, slots=True)
class Action:
    deliver: bool
    warning: str | None
    message: str | None
    ban: bool
    count_warning: bool
    count_block: bool
    # the chat is ended (both sides get ``partner_disconnected``, the recipient a safety notice
    # first): a conversation-level grooming decision stops the conversation, not just the line
    end_chat: bool = False


DELIVER = Action(True, None, None, False, False, False)

_TEXT = {
    "low": "Please keep it friendly - that language may upset your partner.",
    "medium": "This message breaks the chat rules. Repeated violations get your messages blocked.",
    "medium_blocked": "Message not sent: you have had too many warnings. "
    "Further violations lead to a ban.",
    "high": "Message not sent: it breaks the chat rules (threats, personal information or abuse).",
    "personal_info": "Message not sent: for your safety, sharing contact details, addresses or "
    "social media handles is not allowed here.",
    "link": "Message not sent: for your safety, links are not allowed here.",
    "grooming": "Message not sent: this conversation looks unsafe and has been flagged.",
    "grooming_move": "Message not sent: questions like this are not allowed here, for the safety "
    "of the teens on Anygle.",
    "grooming_ended": "Message not sent, and this chat has been ended: it looked unsafe for a "
    "teen. Repeated violations lead to a ban.",
    "ban": "You have been banned for violating the chat rules.",
}


@dataclass
class EscalationPolicy:
    block_after_warnings: int = 3
    ban_after_blocks: int = 5
    strike_ttl: float = 3600.0

    def decide(self, verdict: Verdict, *, warnings: int, blocks: int) -> Action:
        """``warnings``/``blocks`` are this user's counts before this message."""
        sev = verdict.severity
        if sev is Severity.CLEAN:
            return DELIVER
        if sev is Severity.ZERO:
            return Action(False, "high", _TEXT["ban"], True, False, True)
        if sev is Severity.LOW:
            return Action(True, "low", _TEXT["low"], False, False, False)
        if sev is Severity.MEDIUM and warnings + 1 < self.block_after_warnings:
            return Action(True, "medium", _TEXT["medium"], False, True, False)
        ban = blocks + 1 >= self.ban_after_blocks
        if sev is Severity.MEDIUM:
            return Action(
                False, "medium", _TEXT["ban" if ban else "medium_blocked"], ban, True, True
            )
        text = _TEXT.get(verdict.category or "", _TEXT["high"])
        if verdict.basis in (MODEL, SIGNAL):
            # not evidence a person would ban on: blocked, and not a strike
            if verdict.category == "grooming":
                text = _TEXT["grooming_move"]
            return Action(False, "high", text, False, False, False)
        if verdict.basis == CONVERSATION:
            text = _TEXT["ban" if ban else "grooming_ended"]
            return Action(False, "high", text, ban, False, True, end_chat=True)
        return Action(False, "high", _TEXT["ban"] if ban else text, ban, False, True)
