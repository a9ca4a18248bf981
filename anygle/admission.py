"""Admission: whether a client address may open a WebSocket or be served over HTTP.

Everything counts per abuse key (:mod:`anygle.clientip`: an IPv4 address, an IPv6 network):
the instance's key table and its cap, the per-minute handshake and HTTP budgets and the open
connection cap (shared by all instances through the engine), and bans.  The WebSocket protocol
and the HTTP resource ask here; neither talks to the engine.

A refusal before the handshake is an HTTP status (:class:`Refused`).  The connection cap and a
ban are told after the socket opens (``Ticket.refusal``), as an ``error`` frame and a close reason
that a browser can read.  Without shared state (Redis down) admission fails open: joins are
refused anyway, and bans are polled again once it is back.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.logger import Logger

from anygle.clientip import ClientAddress
from anygle.engine.base import AdmissionStore, EngineUnavailable
from anygle.errors import ClientError
from anygle.limits import AbuseKeyTable

WINDOW = 60.0  # s: ``rate-limit`` is per minute

_log = Logger()


class Refused(Exception):
    """Refuse the request or handshake with this HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class Ticket:
    """One connection's claim on its key's budgets; :meth:`Admission.release` gives it back."""

    address: ClientAddress
    refusal: ClientError | None = None
    holds_key: bool = False  # counted as connected in the key table
    holds_slot: bool = False  # counted in the engine's per-key connection cap
    released: bool = False


class Admission:
    def __init__(
        self,
        engine: AdmissionStore,
        keys: AbuseKeyTable,
        rate_limit: int = 0,
        max_per_key: int = 0,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.rate_limit = rate_limit  # handshakes, and HTTP requests, per minute per key (0: off)
        self.max_per_key = max_per_key  # open connections per key, all instances (0: off)

    async def connect(self, ticket: Ticket) -> None:
        """A WebSocket handshake: raises :class:`Refused`, or sets ``ticket.refusal``."""
        address, key = ticket.address, ticket.address.abuse_key
        if not self.keys.admit(key):
            raise Refused(503, "Too many client networks right now, try again later")
        self.keys.connected(key)
        ticket.holds_key = True
        try:
            if self.rate_limit and not await self.engine.rate(f"ws:{key}", self.rate_limit, WINDOW):
                raise Refused(429, "Too many connection attempts from your address")
            reason = await self.engine.get_ban(None, address.ban_keys)
            if reason is not None:
                ticket.refusal = ClientError("BANNED", f"banned: {reason}")
                return
            if self.max_per_key:
                if not await self.engine.acquire_connection(key, self.max_per_key):
                    per = "address" if key == address.ip else f"network ({key})"
                    ticket.refusal = ClientError(
                        "TOO_MANY_CONNECTIONS", f"at most {self.max_per_key} connections per {per}"
                    )
                    return
                ticket.holds_slot = True
                if ticket.released:  # the client left while we were asking
                    self._release_slot(ticket)
        except EngineUnavailable:
            pass  # fail open

    def release(self, ticket: Ticket) -> None:
        """The connection closed (or never opened)."""
        ticket.released = True
        self._release_slot(ticket)
        if ticket.holds_key:
            ticket.holds_key = False
            self.keys.disconnected(ticket.address.abuse_key)

    def _release_slot(self, ticket: Ticket) -> None:
        if ticket.holds_slot:
            ticket.holds_slot = False
            d = self.engine.release_connection(ticket.address.abuse_key)
            d.addErrback(lambda f: f.trap(EngineUnavailable))
            d.addErrback(lambda f: _log.failure("releasing a connection slot failed", f))

    async def request(self, address: ClientAddress) -> None:
        """An HTTP request: raises :class:`Refused` past the key's budget."""
        if not self.rate_limit:
            return
        key = address.abuse_key
        if not self.keys.admit(key):
            raise Refused(503, "too many client networks, try later")
        try:
            allowed = await self.engine.rate(f"http:{key}", self.rate_limit, WINDOW)
        except EngineUnavailable:
            return  # without shared counters, serve (``/health`` must report the outage)
        if not allowed:
            raise Refused(429, "too many requests")
