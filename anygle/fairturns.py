"""Fair reactor turns: no connection holds the reactor for long.

Twisted's epoll reactor handles every readable socket in one turn, reading up to 64 KiB from each,
and Autobahn's ``consumeData`` then handles every complete frame in that buffer before returning:
under a burst one turn lasted seconds, so every timer (the Redis heartbeat, the matcher tick, the
pushes) ran seconds late (issue 10).

What bounds a turn here:

* **Per connection**: a connection handles at most ``frames_per_turn`` frames, then stops reading
  (``transport.pauseProducing()``: TCP pushes back on the sender) and waits in the
  :class:`TurnScheduler`'s round-robin; it resumes reading once its buffer is handled.
* **Per turn**: once the frames handled in the current turn took ``turn_seconds``, a connection
  with new data handles nothing now and joins the round-robin, and a round of the round-robin stops
  after ``turn_seconds`` too. Under a sustained load with no idle moment a "turn" is thus a time
  slice of ``turn_seconds``, after which the round-robin (and every due timer) runs. A round
  runs from ``callLater(0)``, i.e. after the reactor has run the timers that are due: between
  two rounds, every timer gets its turn.

Frames are never dropped or reordered: what is not handled stays in Autobahn's receive buffer, in
order, and new bytes are not even read while older ones wait.
"""

from __future__ import annotations

from collections import deque
from time import perf_counter
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

FRAMES_PER_TURN = 32  # frames one connection handles before others get their turn
TURN_SECONDS = 0.02  # frame handling per reactor turn before the rest waits for the next turn
IDLE_GAP = 0.0005  # no frame handled for this long: the reactor was waiting, a new turn begins

_log = Logger(namespace="anygle.fairturns")


class Waiter(Protocol):
    def continue_turn(self, budget: int) -> bool:
        """Handle up to ``budget`` more frames; True when more are left for a later turn."""


class TurnScheduler:
    """Round-robin over the connections that have frames left (one per factory)."""

    def __init__(
        self,
        clock: IReactorTime,
        frames_per_turn: int = FRAMES_PER_TURN,
        turn_seconds: float = TURN_SECONDS,
    ) -> None:
        self.clock = clock
        self.frames_per_turn = frames_per_turn
        self.turn_seconds = turn_seconds
        self.waiting: deque[Waiter] = deque()
        self._call: IDelayedCall | None = None
        self._turn_started = 0.0
        self._last_end = 0.0  # when frame handling last stopped
        # counters for tests and the console
        self.deferred = 0  # times a connection had to wait for a later turn
        self.rounds = 0  # rounds of the round-robin run

    def budget(self) -> int:
        """How many frames a connection with fresh data may handle in this turn.

        A turn starts when frames arrive after the reactor had nothing to handle for
        ``IDLE_GAP`` (it was waiting in epoll); it does not end until a round of the
        round-robin runs. Marking each turn with a ``callLater(0)`` would be exact but costs
        a timer per reactor turn and makes the reactor poll without waiting, smaller batches
        and more system calls: a quarter of the relay's throughput."""
        now = perf_counter()
        if now - self._last_end > IDLE_GAP:
            self._turn_started = now
        elif now - self._turn_started > self.turn_seconds:
            return 0
        return self.frames_per_turn

    def handled(self) -> None:
        """A connection is done with its frames for now (see ``budget``)."""
        self._last_end = perf_counter()

    def wait(self, conn: Waiter) -> None:
        """``conn`` has frames left: it gets more in a later round."""
        self.deferred += 1
        self.waiting.append(conn)
        if self._call is None:
            self._turn_started = perf_counter()
            self._call = self.clock.callLater(0, self._round)

    def _round(self) -> None:
        """One round: each waiting connection (oldest first) handles ``frames_per_turn`` more,
        until the round took ``turn_seconds``; the rest wait for the next round."""
        self._call = None
        if not self.waiting:
            return
        self.rounds += 1
        self._turn_started = started = perf_counter()
        self._last_end = started
        waiting = self.waiting
        for _ in range(len(waiting)):
            conn = waiting.popleft()
            try:
                more = conn.continue_turn(self.frames_per_turn)
            except Exception:
                _log.failure("continuing a connection's frames failed")
                more = False
            if more:
                waiting.append(conn)
            if perf_counter() - started > self.turn_seconds:
                break
        self._last_end = perf_counter()
        if waiting and self._call is None:
            self._call = self.clock.callLater(0, self._round)


class FairTurnsMixin:
    """For a :class:`~autobahn.twisted.websocket.WebSocketServerProtocol` whose factory has a
    ``turns`` :class:`TurnScheduler`: bounds the frames handled per reactor turn."""

    factory: Any
    transport: Any
    state: int
    STATE_OPEN: int
    STATE_CLOSING: int
    STATE_CLOSED: int
    _turn_waiting = False  # frames are buffered and the connection waits in the round-robin
    _frame_budget = 0

    def consumeData(self) -> None:
        if self.state not in (self.STATE_OPEN, self.STATE_CLOSING):
            super().consumeData()  # type: ignore[misc]  # the handshake: one request at most
            return
        if self._turn_waiting:  # older frames wait for their turn; the new ones go behind them
            return
        turns: TurnScheduler = self.factory.turns
        more = self._handle_frames(turns.budget())
        turns.handled()
        if more:
            self._turn_waiting = True
            pause = getattr(self.transport, "pauseProducing", None)
            if pause is not None:
                pause()
            turns.wait(self)

    def continue_turn(self, budget: int) -> bool:
        if self.state not in (self.STATE_OPEN, self.STATE_CLOSING):
            self._turn_waiting = False  # closed meanwhile: nothing to handle, nobody to resume
            return False
        try:
            if self._handle_frames(budget):
                return True
        except Exception:
            # what Twisted does when dataReceived raises: log, drop the connection
            _log.failure("handling buffered frames failed; dropping the connection")
            self._turn_waiting = False
            self.transport.abortConnection()
            return False
        self._turn_waiting = False
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()
        return False

    def _handle_frames(self, budget: int) -> bool:
        """Autobahn's loop (``while processData() and state != CLOSED``) with a frame budget;
        True when buffered bytes are left after ``budget`` frames."""
        if budget <= 0:
            return bool(self.data)  # type: ignore[attr-defined]
        self._frame_budget = budget
        while self.processData() and self.state != self.STATE_CLOSED:  # type: ignore[attr-defined]
            if self._frame_budget <= 0:
                return True
        return False

    def onFrameEnd(self) -> Any:
        self._frame_budget -= 1
        return super().onFrameEnd()  # type: ignore[misc]


__all__ = ["FRAMES_PER_TURN", "TURN_SECONDS", "FairTurnsMixin", "TurnScheduler"]
