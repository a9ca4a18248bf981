"""The latency scenario: joins arrive at a set rate into one queue; join -> matched as seen by
the client, per engine (and, unless ``--no-latency-quiet``, again with the periodic ``stats`` and
``searching`` pushes turned off, to tell the matching path from the stalls those pushes cause).
"""

from __future__ import annotations

import statistics
from functools import partial
from typing import Any

from bench import procs
from bench.measure import CpuWindow, added_up, percentile
from bench.suite import Bench, Row

QUIET = ["--stats-interval", "86400", "--searching-interval", "86400"]  # pushes off


def latency_row(bench: Bench, engine: str, quiet: bool = False) -> Row:
    a = bench.args
    extra = [*a.server_arg, *(QUIET if quiet else [])]
    total = int(a.rate * a.latency_seconds)
    total += total % 2
    label = f"latency {engine}" + (" (pushes off)" if quiet else "")
    with procs.group() as servers:
        if engine == "redis":
            servers.append(r := procs.redis())
            url = f"redis://127.0.0.1:{r.port}/0"
            servers.append(s := procs.anygle("redis", redis_url=url, extra=extra))
        else:
            servers.append(s := procs.anygle("memory", extra=extra))
        bench.progress.say(f"{label}: {total} joins at {a.rate:g}/s into one queue")
        jobs = bench.jobs(
            "latency",
            total,
            protocol="anygle",
            targets=[("127.0.0.1", s.port)],
            tag="lat",
            queue=a.latency_queue,
        )
        workers = procs.Workers(jobs, bench.progress)
        try:
            workers.wait("started", 20, label)
            workers.wait("ready", 60 + total / 200, f"{label} connect")
            w = len(jobs)
            window = CpuWindow(servers, workers)
            for i in range(w):
                workers.send(
                    i, {"cmd": "go", "rate": a.rate / w, "offset": 0.2 + i / a.rate, "grace": 3.0}
                )
            results = workers.wait("result", a.latency_seconds + 60, label)
            cpu = window.stop()
        finally:
            workers.close()
    lat = [x for res in results for x in res["latencies"]]
    joiner = [
        x
        for res in results
        for x, i in zip(res["latencies"], res["initiator"], strict=True)
        if not i
    ]
    out = {
        "row": engine + (" (pushes off)" if quiet else ""),
        "rate": a.rate,
        "joins": sum(res["joins"] for res in results),
        "matched": len(lat),
        "p50_ms": percentile(lat, 0.5),
        "p95_ms": percentile(lat, 0.95),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": round(max(lat), 3) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 3) if lat else None,
        "joiner_p50_ms": percentile(joiner, 0.5),
        "joiner_p99_ms": percentile(joiner, 0.99),
        **cpu,
        "errors": added_up(res["errors"] for res in results),
        "samples": sorted(round(x, 2) for x in lat),
    }
    bench.progress.say(
        f"{label}: median {out['p50_ms']} ms, p99 {out['p99_ms']} ms "
        f"({out['matched']}/{out['joins']} matched)"
    )
    return out


def scenario(bench: Bench) -> dict[str, Any]:
    ok, why = bench.redis_available()
    rows = []
    for quiet in (False, True) if bench.args.latency_quiet else (False,):
        for engine in ("memory", "redis"):
            row = engine + (" (pushes off)" if quiet else "")
            if engine == "redis" and not ok:
                rows.append({"row": row, "error": f"not run: {why}"})
                continue
            rows.append(
                bench.run_row(f"latency {row}", partial(latency_row, bench, engine, quiet), row)
            )
    return {
        "rows": rows,
        "rate": bench.args.rate,
        "seconds": bench.args.latency_seconds,
        "queue": bench.args.latency_queue,
        "targets": {"redis p50_ms": "<= 5", "redis p99_ms": "<= 25"},
        "note": "all users: join -> matched incl. waiting for the next arrival; "
        "joiner: the user whose join completed the pair (server path only)",
    }
