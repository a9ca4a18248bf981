"""Validation of client messages: turn a decoded frame into clean, typed data or a ClientError.

Each validator takes the frame's ``data`` and returns what the hub needs.  Signalling payloads
(``offer``, ``answer``, ``ice_candidate``) are relayed unchanged, so they are only checked for the
fields a browser needs to use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anygle.errors import ClientError
from anygle.model import AGE_CATEGORIES, MODES, QUEUE_TYPES, Preferences
from anygle.reports import MAX_DETAILS, REASONS

MAX_INTERESTS = 10
MAX_INTEREST_LEN = 32
MAX_CONTENT = 2000
MAX_REASON = 200
MAX_ID = 64  # a client message id, a resume token


def _invalid(message: str) -> ClientError:
    return ClientError("INVALID_DATA", message)


def _map(data: Any, *, optional: bool = False) -> dict[str, Any]:
    if data is None and optional:
        return {}
    if not isinstance(data, dict):
        raise _invalid("'data' must be a map")
    return data


def _choice(
    data: dict[str, Any], key: str, choices: tuple[str, ...], default: str | None = None
) -> str:
    value = data.get(key, default)
    if not isinstance(value, str) or value not in choices:
        raise _invalid(f"'{key}' must be one of {', '.join(choices)}")
    return value


def _bool(data: dict[str, Any], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise _invalid(f"'{key}' must be a boolean")
    return value


def interests(value: Any) -> tuple[str, ...]:
    """At most 10 strings; trimmed, lower-cased, at most 32 characters, empty and duplicates
    dropped, first-given order kept."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_INTERESTS:
        raise _invalid(f"'interests' must be a list of at most {MAX_INTERESTS} strings")
    seen: dict[str, None] = {}
    for item in value:
        if not isinstance(item, str):
            raise _invalid("'interests' must contain strings only")
        tag = " ".join(item.split()).lower()
        if len(tag) > MAX_INTEREST_LEN:
            raise _invalid(f"an interest is at most {MAX_INTEREST_LEN} characters")
        if tag:
            seen[tag] = None
    return tuple(seen)


def join(data: Any) -> Preferences:
    data = _map(data)
    prefs = Preferences(
        age_category=_choice(data, "ageCategory", AGE_CATEGORIES),
        mode=_choice(data, "mode", MODES),
        queue_type=_choice(data, "queueType", QUEUE_TYPES, "moderated"),
        interests=interests(data.get("interests")),
        interests_only=_bool(data, "interestsOnly") if "interestsOnly" in data else False,
    )
    if prefs.age_category == "teen" and prefs.queue_type != "moderated":
        raise ClientError("TEEN_MODERATED_ONLY")
    return prefs


def message(data: Any) -> tuple[str, str | None]:
    """``{content, id?}``: ``(content, id)``; ``id`` (ours) names the message so that a resend
    after a resume is not delivered twice."""
    data = _map(data)
    content = data.get("content")
    if not isinstance(content, str) or not content.strip():
        raise _invalid("'content' must be a non-empty string")
    if len(content) > MAX_CONTENT:
        raise _invalid(f"'content' is at most {MAX_CONTENT} characters")
    return content, _optional_id(data, "id")


def _optional_id(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise _invalid(f"'{key}' must be a string of 1 to {MAX_ID} characters, or null")
    return value


def resume(data: Any) -> tuple[str, str | None]:
    """``{token, lastMessageId}``: ``(token, lastMessageId)``."""
    data = _map(data)
    token = data.get("token")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_ID:
        raise _invalid(f"'token' must be a string of 1 to {MAX_ID} characters")
    return token, _optional_id(data, "lastMessageId")


def skip(data: Any) -> str | None:
    reason = _map(data, optional=True).get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        raise _invalid(f"'reason' must be a string of at most {MAX_REASON} characters")
    return reason


def report(data: Any) -> tuple[str, str | None]:
    """``{reason, details?}``: ``(reason, details)``; blank details count as none."""
    data = _map(data)
    reason = _choice(data, "reason", REASONS)
    details = data.get("details")
    if details is None:
        return reason, None
    if not isinstance(details, str) or len(details) > MAX_DETAILS:
        raise _invalid(f"'details' must be a string of at most {MAX_DETAILS} characters")
    return reason, details.strip() or None


def typing(data: Any) -> bool:
    return _bool(_map(data), "isTyping")


def toggle(data: Any) -> bool:
    return _bool(_map(data), "enabled")


def session_description(data: Any) -> dict[str, Any]:
    """RTCSessionDescriptionInit: ``{type, sdp}``."""
    description = _map(data)
    if not isinstance(description.get("sdp"), str) or not isinstance(
        description.get("type", ""), str
    ):
        raise _invalid("an offer or answer needs a string 'sdp' (and a string 'type')")
    return description


def ice_candidate(data: Any) -> dict[str, Any]:
    """RTCIceCandidateInit: ``{candidate, sdpMid?, sdpMLineIndex?}`` (candidate '' ends them)."""
    candidate = _map(data)
    if not isinstance(candidate.get("candidate"), str):
        raise _invalid("an ICE candidate needs a string 'candidate'")
    mid, index = candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
    if mid is not None and not isinstance(mid, str):
        raise _invalid("'sdpMid' must be a string")
    if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
        raise _invalid("'sdpMLineIndex' must be an integer")
    return candidate


def nothing(data: Any) -> None:
    """``ping`` carries no data; whatever is there is ignored."""
    return None


VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "join": join,
    "message": message,
    "resume": resume,
    "skip": skip,
    "report": report,
    "typing": typing,
    "video_toggle": toggle,
    "audio_toggle": toggle,
    "offer": session_description,
    "answer": session_description,
    "ice_candidate": ice_candidate,
    "ping": nothing,
}
