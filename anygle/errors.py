"""Client-visible errors: one exception type, one table of stable codes.

Handlers raise :class:`ClientError`; the protocol turns it into ``{type:'error', data:{code,
message}}`` in one place.  Codes are part of the wire contract (listed in docs/protocol.md,
"Errors"): never rename one.
"""

from __future__ import annotations

from typing import Any

CODES: dict[str, str] = {
    "BAD_FRAME": "the frame is not a msgpack (binary) or JSON (text) map with a string 'type'",
    "FRAME_TOO_LARGE": "the frame is larger than the 16 KiB limit",
    "UNKNOWN_TYPE": "'type' is not a client message type",
    "INVALID_DATA": "'data' does not have the shape this message type needs",
    "NOT_IN_CHAT": "this message needs a partner, and you have none",
    "ALREADY_REPORTED": "you already reported this partner in this chat",
    "TEEN_MODERATED_ONLY": "teens can only join the moderated queue",
    "BANNED": "this user or address is banned",
    "RATE_LIMITED": "too many messages; slow down",
    "TOO_MANY_CONNECTIONS": "too many connections from your address",
    "SERVICE_UNAVAILABLE": "shared state is unreachable right now; try again shortly",
    "NOT_DELIVERED": "your partner could not be reached for a while: this was not delivered",
    "TOO_MANY_ERRORS": "too many bad frames; the connection is closed",
    "RESUME_FAILED": "that session cannot be resumed (unknown, expired or already used token)",
    "INTERNAL_ERROR": "the server failed to handle this message",
}


class ClientError(Exception):
    """An error the client caused or must be told about; ``code`` is a key of :data:`CODES`."""

    def __init__(
        self, code: str, message: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        self.code = code
        self.message = message or CODES[code]
        self.extra = extra  # more fields for ``data`` (e.g. the first report's ``reportId``)
        super().__init__(f"{code}: {self.message}")

    def frame(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.extra:
            data.update(self.extra)
        return {"type": "error", "data": data}
