"""The shapes :class:`~anygle.model.Stats` takes on the wire: one place for the field names.

``pushed`` is the seed's ``stats`` message; ``overview`` is what ``GET /stats`` and the console
show (the pushed fields plus the operator's figures).  Callers add their instance's own part.
"""

from __future__ import annotations

from typing import Any

from anygle.model import Stats


def pushed(stats: Stats) -> dict[str, Any]:
    """``stats.data`` as the seed defines it (pushed to every client)."""
    return {
        "totalOnline": stats.total_online,
        "inQueue": stats.in_queue,
        "activeChats": stats.active_chats,
        "avgMatchTime": stats.avg_match_time,
    }


def overview(stats: Stats) -> dict[str, Any]:
    """Service-wide figures for operators: the pushed ones, matches, queues, moderation, reports."""
    return {
        **pushed(stats),
        "totalMatches": stats.total_matches,
        "queues": dict(stats.queues),
        "moderation": moderation_summary(stats.moderation),
        "reports": {
            "received": sum(stats.reports.values()),
            "blocks": stats.report_blocks,
            "byReason": dict(stats.reports),
        },
    }


def moderation_summary(counts: dict[str, int]) -> dict[str, Any]:
    """``{"tier:category:outcome": n}`` → totals by tier, by category and by outcome."""
    summary: dict[str, Any] = {"total": 0, "byTier": {}, "byCategory": {}, "byOutcome": {}}
    for key, n in counts.items():
        tier, category, outcome = key.split(":", 2)
        summary["total"] += n
        for group, name in (("byTier", tier), ("byCategory", category), ("byOutcome", outcome)):
            summary[group][name] = summary[group].get(name, 0) + n
    return summary
