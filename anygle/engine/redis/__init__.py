"""The ``redis`` engine (``--engine redis``): many instances share one Redis.

State lives in the seed's keys (``user:``, ``socket:``, ``queue:``, ``room:``, ``stats:global``,
``banned:``) plus the extra keys listed in docs/operations.md.  Every change of shared state is
one Lua script, so matching removes both users from their queue and creates the room in one step,
and a room is ended by exactly one caller; the matching rules mirror :mod:`anygle.matching` / the
memory engine.  The parts:

* :mod:`.engine` — :class:`RedisEngine`, the engine's API: sessions, queues, rooms, relays, and
  the lifecycle of its connections; it composes the parts below;
* :mod:`.scripts` — the scripts (``lua/``): loading, ``EVALSHA`` with ``EVAL`` on ``NOSCRIPT``,
  over the one pipelined command connection;
* :mod:`.delivery` — each instance's inbox stream, relays to other instances, the outage buffer;
* :mod:`.local` — this instance's users and rooms, and what events do to them;
* :mod:`.registration` — registering in Redis, and reconciling after a reconnect, a reap or a
  Redis that lost its data;
* :mod:`.liveness` — which instances are alive: the lease, the reaper, fencing;
* :mod:`.records` — stats, reports, bans, counters and connection limits;
* :mod:`.client` — the connections to Redis.
"""

from anygle.engine.base import EngineUnavailable
from anygle.engine.redis.client import RedisAddress
from anygle.engine.redis.engine import RedisEngine
from anygle.engine.redis.scripts import QUEUES, SCRIPTS, load_scripts

__all__ = ["QUEUES", "SCRIPTS", "EngineUnavailable", "RedisAddress", "RedisEngine", "load_scripts"]
