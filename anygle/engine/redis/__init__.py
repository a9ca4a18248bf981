"""The ``redis`` engine (``--engine redis``): many instances share one Redis.

* :mod:`.engine` — :class:`RedisEngine`: users, queues, rooms, relays, resynchronisation;
* :mod:`.liveness` — which instances are alive: the lease, the reaper, fencing;
* :mod:`.client` — the connections to Redis;
* ``lua/`` — the scripts (every change of shared state is one of them).
"""

from anygle.engine.base import EngineUnavailable
from anygle.engine.redis.client import RedisAddress
from anygle.engine.redis.engine import QUEUES, SCRIPTS, RedisEngine, load_scripts

__all__ = ["QUEUES", "SCRIPTS", "EngineUnavailable", "RedisAddress", "RedisEngine", "load_scripts"]
