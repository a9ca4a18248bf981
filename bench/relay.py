"""The relay scenario: N matched pairs exchange 60-byte chat messages with a window in flight.

Rows: the bare relay (``bench/baseline_relay.py``), anygle's memory engine with moderation off
and on, and the Redis engine with both sockets of a pair on one instance and on two.  Each row's
delivered messages/s is compared with the bare relay's measured in the same round.
:func:`relay_row` is also how the scale-out and overload scenarios measure a set of servers.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench import procs
from bench.measure import CpuWindow, added_up, cpu_ratio, paired_ratio
from bench.suite import Bench, Plan, Row


def relay_row(
    bench: Bench,
    row: str,
    servers: list[procs.Server],
    targets: list[tuple[str, int]],
    protocol: str,
    queue: str = "unmoderated",
    pairs: int | None = None,
) -> Row:
    """Matched pairs on ``targets`` relay for ``--duration`` s after ``--warmup`` s; the rate
    and the CPU of ``servers`` (all the processes the messages go through)."""
    a = bench.args
    pairs = pairs or a.pairs
    label = f"relay {row}"
    bench.progress.say(f"{label}: {pairs} pairs, window {a.window}, {a.warmup:g}+{a.duration:g} s")
    jobs = bench.jobs(
        "relay", pairs * 2, protocol=protocol, targets=targets, tag=row[:6], queue=queue, pairs=True
    )
    workers = procs.Workers(jobs, bench.progress)
    try:
        workers.wait("started", 20, label)
        workers.wait("ready", 60 + pairs / 50, f"{label} setup")
        ready = workers.totals()
        workers.broadcast(
            {"cmd": "go", "warmup": a.warmup, "duration": a.duration, "window": a.window}
        )
        end = time.monotonic() + a.warmup
        while time.monotonic() < end:
            workers.pump(0.1)
            bench.progress(f"{label}: warming up ({workers.summary()})")
        window = CpuWindow(servers, workers)
        end = window.t0 + a.duration
        d0 = workers.totals()["delivered"]
        while time.monotonic() < end:
            workers.pump(0.1)
            d = workers.totals()["delivered"] - d0
            el = time.monotonic() - window.t0
            bench.progress(f"{label}: {d / max(el, 1e-3):,.0f} msgs/s so far")
        cpu = window.stop()
        results = workers.wait("result", 30, label)
    finally:
        workers.close()
    rate = sum(r["rate"] for r in results)
    out = {
        "row": row,
        "pairs": pairs,
        "matched_pairs": ready.get("matched", 0) // 2,
        "mispaired": ready.get("mispaired", 0),
        "rate": round(rate, 1),
        "server_cpu_pct": cpu["server_cpu_pct"],
        "cpu_pct_by_process": window.by_process,
        "client_cpu_pct": cpu["client_cpu_pct"],
        "other_cpu_pct": cpu["other_cpu_pct"],
        "steal_cpu_pct": window.steal_pct,
        # server CPU per delivered message: steadier than the rate on a busy machine
        "server_us_per_msg": round(window.server_seconds / max(rate * window.seconds, 1) * 1e6, 2),
        "load_avg": round(os.getloadavg()[0], 2),
        "workers": len(results),
        "failed": sum(r["failed"] for r in results),
        "closed": sum(r["closed"] for r in results),
        "errors": added_up(r["errors"] for r in results),
    }
    out.update(procs.died(servers))
    bench.progress.say(
        f"{label}: {rate:,.0f} msgs/s (server CPU {out['server_cpu_pct']}%, "
        f"clients {out['client_cpu_pct']}%)"
    )
    return out


def baseline_row(bench: Bench) -> Row:
    with procs.group() as servers:
        servers.append(s := procs.baseline())
        return relay_row(bench, "baseline", servers, [("127.0.0.1", s.port)], "baseline")


def memory_row(bench: Bench, queue: str, row: str) -> Row:
    with procs.group() as servers:
        servers.append(s := procs.anygle("memory", extra=bench.args.server_arg))
        return relay_row(bench, row, servers, [("127.0.0.1", s.port)], "anygle", queue)


def redis_row(bench: Bench, cross: bool, row: str) -> Row:
    """Redis engine; ``cross``: two instances, the sockets of each pair on different ones."""
    with procs.group() as servers:
        servers.append(r := procs.redis())
        for name in ("a", "b") if cross else ("a",):
            servers.append(
                procs.anygle(
                    "redis",
                    redis_url=f"redis://127.0.0.1:{r.port}/0",
                    instance=f"bench-{name}",
                    extra=bench.args.server_arg,
                )
            )
        targets = [("127.0.0.1", s.port) for s in servers[1:]]
        out = relay_row(bench, row, servers, targets, "anygle", bench.args.redis_queue)
        out["redis_cpu_pct_included"] = True
        return out


def scenario(bench: Bench) -> dict[str, Any]:
    a = bench.args
    plan: Plan = [
        ("baseline", lambda: baseline_row(bench)),
        ("memory-off", lambda: memory_row(bench, "unmoderated", "memory-off")),
        ("memory-on", lambda: memory_row(bench, "moderated", "memory-on")),
    ]
    ok, why = bench.redis_available()
    if ok:
        plan += [
            ("redis-same", lambda: redis_row(bench, False, "redis-same")),
            ("redis-cross", lambda: redis_row(bench, True, "redis-cross")),
        ]
    if a.rows:
        plan = [(row, fn) for row, fn in plan if row in a.rows]
    rows = bench.repeated("relay", plan)
    if not ok:
        for row in ("redis-same", "redis-cross"):
            rows.append({"row": row, "error": f"not run: {why}"})
    by = {r["row"]: r for r in rows}
    for r in rows:
        r["x_baseline"] = paired_ratio(r, by.get("baseline"))
        r["x_baseline_per_cpu"] = cpu_ratio(r, by.get("baseline"))
        if r["row"] == "redis-cross":
            r["x_same_instance"] = paired_ratio(r, by.get("redis-same"))
    return {
        "rows": rows,
        "pairs": a.pairs,
        "window": a.window,
        "warmup_s": a.warmup,
        "duration_s": a.duration,
        "repeat": a.repeat,
        "content_bytes": 60,
        "targets": {"memory-on x_baseline": ">= 0.6", "redis-cross x_same_instance": ">= 0.5"},
    }
