"""Session resume (issue 21): how long a resume takes, and what a waiting session holds.

* **Resume time**, over real loopback sockets: pairs chat; one side's connection is aborted (no
  close frame) while its partner sends 5 messages; a new connection from another address sends
  ``resume``.  Measured from the ``resume`` frame sent to ``resumed`` received, and to the last
  missed message received; for the memory engine, the redis engine on one instance, and the
  redis engine across instances (the session moves: ``claim.lua``, the handover, the replay).
* **Memory of a waiting session**: ``n`` pairs on the memory engine on a clock (tests/memory.py,
  no sockets), 10 messages each way; then one side of every pair either drops (its session waits
  for a resume) or closes cleanly (its session ends).  The Python heap difference between the two
  (tracemalloc), per pair, is what a waiting session holds beyond an ended one.

Usage: ``python -m bench.resume [--pairs 40] [--memory-pairs 2000]``: prints a table, writes
``bench/results/resume.json``; progress on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import tracemalloc
from functools import partial
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor

from anygle.moderation import Classifier
from anygle.tap import AnygleService
from bench.measure import percentile
from bench.record import machine
from tests.conftest import settings
from tests.harness import RedisServer, eventually, sleep
from tests.memory import MemoryServer
from tests.wsclient import Client, match

RESULTS = Path(__file__).resolve().parent / "results" / "resume.json"
MISSED = 5  # messages the partner sends while the user is away


def log(msg: str) -> None:
    print(f"[resume {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def start(classifier: Classifier, **overrides: Any) -> AnygleService:
    service = AnygleService(settings(**overrides), reactor, None, classifier)
    service.startService()
    return service


def ready(service: AnygleService) -> bool:
    return bool(service.engine.health()[0])


def port(service: AnygleService) -> int:
    return int(service.ws.port.getHost().port)


async def one_resume(
    a_port: int, b_port: int, resume_port: int, source: str
) -> tuple[float, float]:
    a = await Client.connect(a_port)
    b = await Client.connect(b_port)
    await match(a, b)
    token = a.received[0]["data"]["resumeToken"]
    a.drop()
    await b.expect("partner_away", timeout=10)
    for i in range(MISSED):
        b.send("message", {"content": f"missed {i}"})
    await sleep(0.05)
    c = await Client.connect(resume_port, bind=source)
    started = time.perf_counter()
    c.send("resume", {"token": token, "lastMessageId": None})
    await c.expect("resumed", timeout=10)
    resumed = time.perf_counter() - started
    for _ in range(MISSED):
        await c.expect("message", timeout=10)
    replayed = time.perf_counter() - started
    await c.close()
    await b.close()
    return resumed * 1000, replayed * 1000


async def resume_times(pairs: int, classifier: Classifier) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    redis = RedisServer().start()
    try:
        memory = start(classifier)
        one = start(classifier, engine="redis", redis=redis.url, instance_id="bench-1")
        two = start(classifier, engine="redis", redis=redis.url, instance_id="bench-2")
        for service in (one, two):
            await eventually(partial(ready, service), what="redis engine ready")
        cases = [
            ("memory engine", port(memory), port(memory), port(memory)),
            ("redis, same instance", port(one), port(one), port(one)),
            ("redis, another instance", port(one), port(one), port(two)),
        ]
        for name, a_port, b_port, resume_port in cases:
            times = []
            for i in range(pairs):
                # a source address each: resume attempts are limited per address (10 a minute)
                source = f"127.0.{len(rows) + 1}.{i + 2}"
                times.append(await one_resume(a_port, b_port, resume_port, source))
                if (i + 1) % 10 == 0:
                    log(f"{name}: {i + 1}/{pairs}")
            first = [t[0] for t in times]
            last = [t[1] for t in times]
            rows.append(
                {
                    "case": name,
                    "resumes": pairs,
                    "resumed_ms_median": percentile(first, 0.5),
                    "resumed_ms_p95": percentile(first, 0.95),
                    "replayed_ms_median": percentile(last, 0.5),
                    "replayed_ms_p95": percentile(last, 0.95),
                }
            )
        for service in (memory, one, two):
            await service.stopService()
    finally:
        redis.stop()
    return rows


def heap_after(pairs: int, drop: bool, classifier: Classifier) -> int:
    """Heap (bytes) held after ``pairs`` chats of 10 messages each way whose first user then
    drops (``drop``) or closes cleanly."""
    server = MemoryServer(classifier, message_limits="off")
    try:
        gc.collect()
        tracemalloc.start()
        clients = []
        for _ in range(pairs):
            a, b = server.pair()
            for i in range(10):
                b.send("message", {"content": f"a line of ordinary chat, number {i}"})
                a.send("message", {"content": f"and an answer to it, number {i}"})
            a.received.clear()
            b.received.clear()
            clients.append((a, b))
        for a, _ in clients:
            if drop:
                server.cut(a)
            else:
                a.sendClose(1000)
        server.flush()
        partners = [b for _, b in clients]
        del clients, a
        for b in partners:
            b.received.clear()
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        away = sum(1 for s in server.hub.sessions.values() if s.away is not None)
        assert away == (pairs if drop else 0), away
        return current
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40, help="resumes timed per case")
    parser.add_argument("--memory-pairs", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON file written")
    args = parser.parse_args()
    classifier = Classifier()
    log(f"memory: {args.memory_pairs} pairs, one side drops / closes")
    dropped = heap_after(args.memory_pairs, True, classifier)
    closed = heap_after(args.memory_pairs, False, classifier)
    per_session = (dropped - closed) / args.memory_pairs
    memory = {
        "pairs": args.memory_pairs,
        "heap_with_waiting_sessions_bytes": dropped,
        "heap_with_ended_sessions_bytes": closed,
        "bytes_per_waiting_session": round(per_session),
    }
    rows: list[dict[str, Any]] = []

    async def timed() -> None:
        rows.extend(await resume_times(args.pairs, classifier))

    failure: list[Any] = []
    d = defer.ensureDeferred(timed())
    d.addErrback(failure.append)
    d.addBoth(lambda _: reactor.callLater(0, reactor.stop))
    reactor.run()
    if failure:
        failure[0].raiseException()
    print(f"\nresume, {args.pairs} resumes per case ({MISSED} missed messages each)")
    print(f"{'case':<26}{'resumed ms (median/p95)':>26}{'all replayed ms (median/p95)':>32}")
    for r in rows:
        print(
            f"{r['case']:<26}{r['resumed_ms_median']:>14.1f} / {r['resumed_ms_p95']:<9.1f}"
            f"{r['replayed_ms_median']:>20.1f} / {r['replayed_ms_p95']:<9.1f}"
        )
    print(
        f"\na waiting session holds {memory['bytes_per_waiting_session']} bytes more than an "
        f"ended one (Python heap, {args.memory_pairs} pairs, 10 messages each way)"
    )
    args.out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "machine": machine(),
                "times": rows,
                "memory": memory,
            },
            indent=1,
        )
        + "\n"
    )
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
