"""Reload moderation rules on SIGHUP, so operators can change word lists without a restart.

A broken rule file is logged and the running rules stay in force (Classifier.reload raises
ValueError before swapping anything).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from .classifier import Classifier

log = Logger(namespace="anygle.moderation")


def reload_rules(classifier: Classifier) -> bool:
    """Reload now; log the outcome. True when the new rules are in force."""
    try:
        classifier.reload()
    except ValueError as exc:
        log.error("moderation rules NOT reloaded, keeping the old ones: {error}", error=str(exc))
        return False
    log.info("moderation rules reloaded from {count} files", count=len(classifier.rules.sources))
    return True


def install_sighup_reload(classifier: Classifier, reactor: Any = None) -> Callable[[], None]:
    """Reload ``classifier`` on SIGHUP; returns a function that restores the old handler.

    With a reactor the reload runs in the reactor thread (``callFromThread`` is safe from a
    signal handler); without one it runs directly in the handler.
    """

    def handler(signum: int, frame: object) -> None:
        if reactor is not None:
            reactor.callFromThread(reload_rules, classifier)
        else:
            reload_rules(classifier)

    previous = signal.signal(signal.SIGHUP, handler)
    return lambda: signal.signal(signal.SIGHUP, previous)
