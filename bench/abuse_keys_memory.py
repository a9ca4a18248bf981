"""What one abuse key costs in memory, and how long a sweep of a full table takes.

Feeds N distinct IPv6 /64 keys (a client cycling through networks) through every per-key map an
instance keeps with the memory engine, and measures each with ``tracemalloc``: the abuse-key
table (``anygle.limits.AbuseKeyTable``), the handshake and HTTP rate state, the connection count
and the two strike counters.  The sum is the worst case of one key (a key that did everything);
``--max-abuse-keys`` times it bounds the memory a flood of new keys can take.  With the redis
engine the rate, connection and strike entries live in Redis instead, and only the table is in
this process.

Run: .venv/bin/python -m bench.abuse_keys_memory [--keys 100000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable

from twisted.internet.task import Clock

from anygle.clientip import abuse_key
from anygle.engine.base import EngineConfig
from anygle.engine.memory import MemoryEngine
from anygle.limits import KEY_WINDOW, SWEEP_EVERY, AbuseKeyTable


def measured(step: Callable[[str], object], keys: list[str]) -> int:
    """Bytes still allocated after ``step`` ran for every key."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for key in keys:
        step(key)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    n = parser.parse_args().keys
    addresses = [f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1" for i in range(n)]
    keys: list[str] = []
    key_bytes = measured(lambda a: keys.append(abuse_key(a)), addresses)
    clock = Clock()
    clock.advance(1000.0)
    table = AbuseKeyTable(n, clock)
    engine = MemoryEngine(EngineConfig(instance_id="bench"), clock)
    parts = {
        "key string (abuse_key)": key_bytes,
        "AbuseKeyTable entry": measured(table.admit, keys),
        "handshake rate (ws:)": measured(lambda k: engine.rate(f"ws:{k}", 100, 60.0), keys),
        "HTTP rate (http:)": measured(lambda k: engine.rate(f"http:{k}", 100, 60.0), keys),
        "connection count": measured(lambda k: engine.acquire_connection(k, 5), keys),
        "strikes (warn + block)": measured(
            lambda k: (
                engine.incr(f"strikes:warn:ip:{k}", 3600.0),
                engine.incr(f"strikes:block:ip:{k}", 3600.0),
            ),
            keys,
        ),
    }
    total = sum(parts.values())
    print(f"{n} distinct IPv6 /64 keys, memory engine, Python {sys.version.split()[0]}")
    for name, size in parts.items():
        print(f"  {name:26} {size / n:7.1f} B/key  {size / 2**20:7.1f} MiB")
    print(f"  {'total (worst case)':26} {total / n:7.1f} B/key  {total / 2**20:7.1f} MiB")
    clock.advance(KEY_WINDOW + 1)  # every key expired: the next admit sweeps them all
    started = time.perf_counter()
    table.admit("203.0.113.1")
    print(f"sweep of {n} expired keys: {(time.perf_counter() - started) * 1000:.1f} ms")
    for key in keys:
        table.admit(key)
    clock.advance(SWEEP_EVERY)  # all alive: a sweep that keeps everything
    started = time.perf_counter()
    table._sweep(clock.seconds())
    print(f"sweep of {n} live keys: {(time.perf_counter() - started) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
