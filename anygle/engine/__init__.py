"""Engine registry: maps the ``engine`` setting to an implementation (crossbar's personality shape).

Implementations are imported lazily, so the memory engine never imports txredisapi.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IReactorTime

from anygle.engine.base import Engine, EngineConfig, EngineSink

if TYPE_CHECKING:  # mypy checks each implementation against every part of the seam
    from anygle.engine.memory import MemoryEngine
    from anygle.engine.redis import RedisEngine

    def _conforms(memory: MemoryEngine, redis: RedisEngine) -> tuple[Engine, Engine]:
        return memory, redis


ENGINES: dict[str, str] = {
    "memory": "anygle.engine.memory:MemoryEngine",
    "redis": "anygle.engine.redis:RedisEngine",
}

__all__ = [
    "ENGINES",
    "Engine",
    "EngineConfig",
    "EngineSink",
    "create_engine",
]


def create_engine(name: str, config: EngineConfig, clock: IReactorTime) -> Engine:
    """Build the engine called ``name`` (a key of :data:`ENGINES`)."""
    try:
        module_name, class_name = ENGINES[name].split(":")
    except KeyError:
        raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    engine: Engine = cls(config, clock)
    return engine
