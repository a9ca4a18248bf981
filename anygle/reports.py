"""Reporting a partner (our extension of the seed protocol; docs/protocol.md "Reports").

A user reports the current partner, or the last one up to ``REPORT_GRACE`` seconds after the chat
ended.  The report carries the reported user's last messages in that room: the messages the
*reporter* received from them.  Those pass through the reporter's instance anyway (every relay
ends in its hub), so the transcript is kept there, in the reporter's session, as a small ring
buffer — no Redis write on the chat hot path, nothing lost when the reported user disconnects
or their instance dies, and nothing the reporter could forge (the server recorded what it
delivered).  It lives for the room's life plus the grace period, and only a report stores it.

The engine stores reports (memory: in-process and bounded; Redis: ``report:{id}`` with a
retention TTL) and counts distinct reporters per reported user: ``report_ban_reporters`` distinct
reporter addresses within ``report_ban_window`` ban the user (``banned:users:{id}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

REASONS = ("harassment", "sexual", "underage", "spam", "hate", "other")
MAX_DETAILS = 500
REPORT_GRACE = 60.0  # s after a chat ended during which its partner can still be reported
TRANSCRIPT_MESSAGES = 20  # the reported user's last messages kept with a report
TRANSCRIPT_CHARS = 10_000  # and at most this many characters of them (memory bound per session)
BAN_REASON = "reported by several users"


class Transcript:
    """The partner's last messages in one room, as received (``{id, content, timestamp}``): at
    most ``TRANSCRIPT_MESSAGES`` and ``TRANSCRIPT_CHARS`` characters, the oldest dropped first."""

    __slots__ = ("_chars", "_messages")

    def __init__(self) -> None:
        self._messages: list[dict[str, Any]] = []  # at most 20 (an empty deque takes 770 B)
        self._chars = 0

    def add(self, message: dict[str, Any]) -> None:
        self._messages.append(message)
        self._chars += len(message["content"])
        while len(self._messages) > TRANSCRIPT_MESSAGES or (
            self._chars > TRANSCRIPT_CHARS and len(self._messages) > 1
        ):
            self._chars -= len(self._messages.pop(0)["content"])

    def messages(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._messages]

    def snapshot(self) -> list[dict[str, Any]]:
        """The messages themselves, not copies (they are never changed): what a resume may
        replay (anygle/resume.py), kept without doubling the transcript's memory."""
        return list(self._messages)


@dataclass(frozen=True, slots=True)
class EndedChat:
    """A chat that ended at ``ended_at``: its partner stays reportable for the grace period."""

    partner_id: str
    room_id: str
    ended_at: float
    transcript: Transcript | None


@dataclass(frozen=True, slots=True)
class Report:
    """A report as the hub hands it to the engine."""

    report_id: str
    reporter: str
    reporter_ip: str
    reporter_key: str  # counted for the distinct-reporter ban: the reporter's abuse key
    reported: str
    room_id: str
    reason: str
    details: str | None
    created_at: int  # ms since the epoch
    messages: list[dict[str, Any]] = field(default_factory=list)

    def record(self, reported_ip: str | None) -> dict[str, Any]:
        """The stored record, the same shape from both engines (console ``report(id)``)."""
        return {
            "reportId": self.report_id,
            "reporter": self.reporter,
            "reporterIp": self.reporter_ip,
            "reported": self.reported,
            "reportedIp": reported_ip,
            "reason": self.reason,
            "details": self.details,
            "roomId": self.room_id,
            "createdAt": self.created_at,
            "messages": self.messages,
        }

    def hash_fields(self) -> list[str]:
        """``report:{id}`` hash fields for Redis: :meth:`record` as strings (``reportedIp`` is
        added by the script)."""
        record = self.record(None)
        del record["reportedIp"]
        record["details"] = self.details or ""
        record["createdAt"] = str(self.created_at)
        record["messages"] = json.dumps(self.messages, separators=(",", ":"), ensure_ascii=False)
        return [item for pair in record.items() for item in pair]


def record_from_hash(fields: dict[str, str]) -> dict[str, Any]:
    """The inverse of :meth:`Report.hash_fields` (+ ``reportedIp``) for a ``report:{id}`` hash."""
    return {
        "reportId": fields["reportId"],
        "reporter": fields["reporter"],
        "reporterIp": fields["reporterIp"],
        "reported": fields["reported"],
        "reportedIp": fields.get("reportedIp") or None,
        "reason": fields["reason"],
        "details": fields.get("details") or None,
        "roomId": fields["roomId"],
        "createdAt": int(fields["createdAt"]),
        "messages": json.loads(fields.get("messages") or "[]"),
    }


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What the engine did: stored (``report_id``), or ``duplicate`` (``report_id`` is the first
    report of this reporter in this room); ``banned`` when this report banned the user."""

    report_id: str
    duplicate: bool = False
    banned: bool = False


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """One line's worth of a report for the console's ``reports()``."""
    details = record.get("details") or ""
    return {
        "reportId": record["reportId"],
        "time": datetime.fromtimestamp(record["createdAt"] / 1000.0, UTC).isoformat(
            timespec="seconds"
        ),
        "reason": record["reason"],
        "reported": record["reported"],
        "reporter": record["reporter"],
        "messages": len(record["messages"]),
        "details": details if len(details) <= 60 else details[:59] + "…",
    }


UNLABELLED = "?"  # the label of an exported line until an operator sets one


def export_header() -> str:
    """First line of a labelling file (the training corpora's comment syntax)."""
    return (
        "# reported transcripts for labelling: replace '?' with clean or a category "
        "(anygle/moderation/README.md); tools/train_moderation.py --extra FILE trains on them"
    )


def export_lines(record: dict[str, Any]) -> list[str]:
    """The reported user's messages of one report as training-format lines
    (``label<TAB>who<TAB>tags<TAB>text``), labelled ``?``; ``who`` is ``teen``: the queue is
    not stored with a report, and the teen policy is what operators teach."""
    tags = f"report:{record['reportId']},reason:{record['reason']}"
    out = []
    for m in record["messages"]:
        text = " ".join(str(m.get("content", "")).split())  # no tabs or newlines in a field
        if text:
            out.append(f"{UNLABELLED}\tteen\t{tags}\t{text}")
    return out
