"""A periodic task as a service that survives its own failures.

``LoopingCall`` stops for good on the first exception (wormhole issue 13) and, given a Deferred,
waits for it; this wrapper logs every failure, never dies, and skips a tick while the previous one
is still running instead of piling them up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, NotACoroutineError, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure


class Periodic(Service):
    log = Logger()

    def __init__(
        self,
        name: str,
        interval: float,
        fn: Callable[[], object],  # a coroutine, a Deferred or a plain value
        clock: IReactorTime,
    ) -> None:
        self.setName(name)
        self.interval = interval
        self.fn = fn
        self.clock = clock
        self.runs = 0
        self.failures = 0
        self.skipped = 0
        self._loop: LoopingCall | None = None
        self._running: Deferred[Any] | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._running if self._running is not None else succeed(None)

    def _tick(self) -> None:
        if self._running is not None:
            self.skipped += 1
            return
        self.runs += 1
        try:
            result = self.fn()
            if isinstance(result, Deferred | Coroutine):
                d = ensureDeferred(result)
            elif isinstance(result, Awaitable):  # what ensureDeferred would refuse
                raise NotACoroutineError(f"{result!r} is not a coroutine or a Deferred")
            else:
                d = succeed(result)
        except Exception:
            d = Deferred()
            d.errback(Failure())
        d.addErrback(self._failed)
        if not d.called:
            self._running = d
            d.addBoth(self._done)

    def _done(self, result: object) -> object:
        self._running = None
        return result

    def _failed(self, failure: Failure) -> None:
        self.failures += 1
        self.log.failure("periodic task {name} failed", failure, name=self.name)
