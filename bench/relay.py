"""The relay scenario: N matched pairs exchange 60-byte chat messages with a window in flight.

Rows: the bare relay (``bench/baseline_relay.py``), anygle's memory engine with moderation off
and on, and the Redis engine with both sockets of a pair on one instance and on two, all fed one
repeated 60-byte line; then what users send (``bench/chatlines.py``): the teen queue fed varied
teen chat lines and the adult queues fed varied adult lines, each beside the bare relay fed the
same lines (``baseline-teen``, ``baseline-adult``).  Each row's delivered messages/s and server
CPU per message are compared with its bare relay's measured in the same round.
:func:`relay_row` is also how the scale-out and overload scenarios measure a set of servers.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench import chatlines, procs
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
    lines: str | None = None,
) -> Row:
    """Matched pairs on ``targets`` relay for ``--duration`` s after ``--warmup`` s; the rate
    and the CPU of ``servers`` (all the processes the messages go through).  ``lines``: send
    varied chat lines of that queue (``teen``/``adult``, ``bench/chatlines.py``) as a teen or
    an adult, instead of the one repeated line."""
    a = bench.args
    pairs = pairs or a.pairs
    label = f"relay {row}"
    bench.progress.say(f"{label}: {pairs} pairs, window {a.window}, {a.warmup:g}+{a.duration:g} s")
    texts = chatlines.load(lines, a.lines) if lines else None
    jobs = bench.jobs(
        "relay",
        pairs * 2,
        protocol=protocol,
        targets=targets,
        tag=row[:6],
        queue=queue,
        pairs=True,
        texts=texts,
        age="teen" if lines == "teen" and protocol == "anygle" else "adult",
        # people chat a while and skip: varied rows do too (the bare relay has no chats)
        chat_messages=a.chat_messages if lines and protocol == "anygle" else 0,
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
    sent = {
        k: sum(r.get(k, 0) for r in results)
        for k in ("delivered", "blocked", "notices", "chats", "ended")
    }
    out = {
        "row": row,
        "lines": lines or "one",
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
        # moderation held these back (or told a teen to be careful): ordinary lines should not
        # be; shown so that a row that delivers less because it blocks more is not misread
        "blocked_pct": round(
            100 * sent["blocked"] / max(1, sent["delivered"] + sent["blocked"]), 3
        ),
        "notices": sent["notices"],
        "chats": sent["chats"] // 2,  # chats after the first, counted by both sockets
        "chats_ended": sent["ended"] // 2,  # ... of which moderation ended
    }
    out.update(procs.died(servers))
    bench.progress.say(
        f"{label}: {rate:,.0f} msgs/s (server CPU {out['server_cpu_pct']}%, "
        f"clients {out['client_cpu_pct']}%)"
    )
    return out


def baseline_row(bench: Bench, row: str = "baseline", lines: str | None = None) -> Row:
    with procs.group() as servers:
        servers.append(s := procs.baseline())
        target = [("127.0.0.1", s.port)]
        return relay_row(bench, row, servers, target, "baseline", lines=lines)


def memory_row(bench: Bench, queue: str, row: str, lines: str | None = None) -> Row:
    with procs.group() as servers:
        servers.append(s := procs.anygle("memory", extra=bench.args.server_arg))
        target = [("127.0.0.1", s.port)]
        return relay_row(bench, row, servers, target, "anygle", queue, lines=lines)


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
        # what users send: varied lines, each queue beside the bare relay fed the same lines
        ("baseline-teen", lambda: baseline_row(bench, "baseline-teen", "teen")),
        ("teen", lambda: memory_row(bench, "moderated", "teen", "teen")),
        ("baseline-adult", lambda: baseline_row(bench, "baseline-adult", "adult")),
        ("adult-off", lambda: memory_row(bench, "unmoderated", "adult-off", "adult")),
        ("adult-on", lambda: memory_row(bench, "moderated", "adult-on", "adult")),
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
        # each row against the bare relay fed the same frames (``baseline-teen`` itself too)
        lines = r.get("lines", "one")
        ref = by.get("baseline" if lines == "one" else f"baseline-{lines}")
        r["x_baseline"] = paired_ratio(r, ref)
        r["x_baseline_per_cpu"] = cpu_ratio(r, ref)
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
        "lines_file": str(a.lines),
        "targets": {
            "memory-off x_baseline_per_cpu": ">= 0.7",
            "memory-on x_baseline_per_cpu": ">= 0.6",
            "teen x_baseline_per_cpu": ">= 0.5",
            "redis-cross x_same_instance": ">= 0.5",
        },
    }
