"""The scripts in ``lua/`` and the command connection they run over.

Every change of shared state is one script, loaded with ``SCRIPT LOAD`` whenever the connection
is made and called with ``EVALSHA`` — ``EVAL`` when Redis answers ``NOSCRIPT`` (its script cache
was emptied between the load and the call).  Every command, relays and scripts alike, goes over
the one pipelined connection, so they reach Redis in the order they were issued.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.python.failure import Failure

from anygle.engine.base import EngineUnavailable
from anygle.model import AGE_CATEGORIES, MODES, QUEUE_TYPES

__all__ = [
    "CONNECTION_ERRORS",
    "QUEUES",
    "SAFE_TO_LOSE",
    "SCRIPTS",
    "Commands",
    "Status",
    "first_error",
    "load_scripts",
    "ms",
    "text",
]

QUEUES = tuple(f"{c}:{m}:{t}" for c in AGE_CATEGORIES for m in MODES for t in QUEUE_TYPES)
SCRIPTS = (
    "acquire",
    "ban",
    "check_bans",
    "claim",
    "connect",
    "disconnect",
    "heartbeat",
    "incr",
    "join",
    "leave_room",
    "queue_status",
    "rate",
    "reap",
    "register",
    "rekey",
    "release",
    "report",
    "stats",
    "tick",
    "touch",
)

# Scripts whose loss in flight (connection dropped before the reply) leaves nothing to put right:
# they read, refresh TTLs, count, or reap other instances (idempotent).
SAFE_TO_LOSE = frozenset(
    {"check_bans", "heartbeat", "incr", "queue_status", "rate", "stats", "touch", "ban", "report"}
)

CONNECTION_ERRORS = (txredisapi.ConnectionError, ConnectionError, defer.CancelledError)


def ms(seconds: float) -> int:
    return round(seconds * 1000.0)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def first_error(failure: Failure) -> Failure:
    """A gatherResults failure as the failure of its first Deferred (EngineUnavailable …)."""
    if isinstance(failure.value, defer.FirstError):
        return failure.value.subFailure
    return failure


def load_scripts() -> dict[str, str]:
    """Every script with the shared helpers in front."""
    lua = resources.files("anygle.engine.redis") / "lua"
    common = (lua / "common.lua").read_text()
    return {name: common + "\n" + (lua / f"{name}.lua").read_text() for name in SCRIPTS}


@dataclass(slots=True)
class Status:
    """Whether Redis may be used now, and why not; shared by the engine and its parts."""

    available: bool = False
    reason: str = "redis unavailable: not connected yet"
    refused: str | None = None  # why the last connection attempt failed (None: it connected)
    dirty: bool = False  # Redis may have missed local changes: reconcile when registering again
    started: bool = False  # start() was called
    stopping: bool = False  # stop() or halt() was called (and no start() since)


class Commands:
    """The command connection (txredisapi's protocol while connected) and the scripts.

    ``before_script`` runs before every script: the engine flushes the relays batched so far,
    so that a partner never sees the end of a room before its last messages.
    """

    def __init__(self, status: Status, before_script: Callable[[], None]) -> None:
        self.status = status
        self.before_script = before_script
        self.proto: Any = None
        self.sources = load_scripts()
        self.shas: dict[str, str] = {}

    async def load(self, proto: Any) -> None:
        """``SCRIPT LOAD`` every script over ``proto`` (a new connection)."""
        for name, source in self.sources.items():
            sha = await proto.execute_command("SCRIPT", "LOAD", source)
            self.shas[name] = text(sha)

    def raw(self, *args: Any) -> defer.Deferred[Any]:
        """One command; fails with EngineUnavailable at once when not connected."""
        proto = self.proto
        if proto is None:
            return defer.fail(EngineUnavailable(self.status.reason))
        try:
            d: defer.Deferred[Any] = proto.execute_command(*args)
        except CONNECTION_ERRORS as e:
            return defer.fail(EngineUnavailable(str(e)))
        return d

    def evalsha(self, name: str, *args: Any) -> defer.Deferred[Any]:
        """A script without the availability check: for the registration that makes Redis
        available (the scripts were loaded over this very connection)."""
        return self.raw("EVALSHA", self.shas[name], 0, *args)

    def script(self, name: str, *args: Any) -> defer.Deferred[Any]:
        """EVALSHA (EVAL on NOSCRIPT); connection problems become EngineUnavailable."""
        if not self.status.available:
            return defer.fail(EngineUnavailable(self.status.reason))
        self.before_script()
        d = self.evalsha(name, *args)
        d.addErrback(self._noscript, name, args)
        d.addErrback(self.unavailable, name not in SAFE_TO_LOSE)
        return d

    def _noscript(self, failure: Failure, name: str, args: tuple[Any, ...]) -> Any:
        failure.trap(txredisapi.ResponseError)
        if not str(failure.value).startswith("NOSCRIPT"):
            return failure
        return self.raw("EVAL", self.sources[name], 0, *args)

    def unavailable(self, failure: Failure, changes_state: bool = False) -> Any:
        """Errback: a connection problem becomes EngineUnavailable (other failures pass)."""
        if failure.check(EngineUnavailable, *CONNECTION_ERRORS):
            if changes_state:
                # the script may or may not have run: Redis is resynchronised on reconnect
                self.status.dirty = True
            if not failure.check(EngineUnavailable):
                raise EngineUnavailable(f"redis unavailable: {failure.getErrorMessage()}")
        return failure
