"""The memory scenario: server RSS growth per idle connected user and per queued user, anygle's
memory engine against the bare relay, at each of ``--memory-levels`` connections; and, per
phase, WebSocket ping round trips from one connection (how long the reactor stalls).
"""

from __future__ import annotations

import time
from functools import partial
from itertools import pairwise
from typing import Any

from bench import procs
from bench.measure import CpuWindow, percentile, ratio
from bench.suite import Bench, Row

MIB = 2**20


def probe(bench: Bench, workers: procs.Workers, label: str, servers: list[procs.Server]) -> Row:
    """WebSocket ping round trips from one connection for --probe-seconds (reactor stalls)."""
    secs = bench.args.probe_seconds
    if secs <= 0:
        return {}
    bench.progress.say(f"{label}: probing the reactor for {secs:g} s")
    window = CpuWindow(servers, workers)
    workers.send(0, {"cmd": "probe", "seconds": secs, "interval": 0.01})
    rtts = workers.wait_one(0, "probe", secs + 30, label)["rtts"]
    return {
        **window.stop(),
        "pings": len(rtts),
        "p50_ms": percentile(rtts, 0.5),
        "p99_ms": percentile(rtts, 0.99),
        "max_ms": round(max(rtts), 2) if rtts else None,
    }


def settled(workers: procs.Workers, s: procs.Server) -> tuple[dict[str, Any], int]:
    """The workers' counts and the server's RSS once the last step has had time to settle."""
    time.sleep(2.0)
    workers.pump(0)
    return workers.totals(), s.rss()


def open_idle(
    bench: Bench, kind: str, server: procs.Server, n: int, label: str, tag: str
) -> procs.Workers:
    """``n`` idle connections to ``server`` (``kind``: "baseline" or an anygle row) from the
    load processes, all open; the caller closes the workers."""
    jobs = bench.jobs(
        "idle",
        n,
        protocol="baseline" if kind == "baseline" else "anygle",
        targets=[("127.0.0.1", server.port)],
        tag=tag,
    )
    workers = procs.Workers(jobs, bench.progress)
    try:
        workers.wait("started", 20, label)
        workers.wait("ready", 60 + n / 100, label)
    except BaseException:
        workers.close()
        raise
    return workers


def memory_row(bench: Bench, kind: str, requested: int) -> Row:
    # one server process holds every connection: it cannot go past its file limit
    level = min(requested, bench.nofile - 64)
    note = (
        f"memory: {requested} connections capped to {level} by the file "
        f"limit {bench.nofile} (raise the hard limit to measure more)"
    )
    if level < requested and note not in bench.notes:
        bench.notes.append(note)
    label = f"memory {kind} {level}"
    with procs.group() as servers:
        if kind == "baseline":
            servers.append(s := procs.baseline())
        else:
            servers.append(s := procs.anygle("memory", extra=bench.args.server_arg))
        time.sleep(1.0)
        rss0 = s.rss()
        bench.progress.say(
            f"{label}: opening {level} connections (server RSS {rss0 / MIB:.1f} MiB)"
        )
        workers = open_idle(bench, kind, s, level, label, tag="mem")
        try:
            idle, rss1 = settled(workers, s)
            stall_idle = probe(bench, workers, label, [s])
            out = {
                "row": kind,
                "connections": requested,
                "opened": level,
                "connected": idle["connected"],
                "failed": idle["failed"],
                "closed": idle["closed"],
                "rss_start_mib": round(rss0 / MIB, 1),
                "rss_idle_mib": round(rss1 / MIB, 1),
                "per_conn_kb": round((rss1 - rss0) / max(idle["connected"], 1) / 1024, 2),
            }
            out["stall_idle"] = stall_idle
            if kind != "baseline":
                workers.broadcast({"cmd": "join"})
                workers.wait("ready", 60 + level / 200, f"{label} queued")
                queued, rss2 = settled(workers, s)
                out["stall_queued"] = probe(bench, workers, label + " queued", [s])
                out.update(
                    queued=queued["searching"],
                    rss_queued_mib=round(rss2 / MIB, 1),
                    per_queued_extra_kb=round(
                        (rss2 - rss1) / max(queued["searching"], 1) / 1024, 2
                    ),
                )
                out["per_queued_kb"] = round(out["per_conn_kb"] + out["per_queued_extra_kb"], 2)
            out["errors"] = workers.totals()["errors"]
            out["server_alive"] = s.alive()
        finally:
            workers.close()
    bench.progress.say(
        f"{label}: {out['per_conn_kb']} KB/connection"
        + (f", {out.get('per_queued_kb')} KB/queued user" if "per_queued_kb" in out else "")
    )
    return out


def marginal(rows: list[Row]) -> None:
    """``step_kb``: RSS per connection from the level below to this one (both servers start
    alike). Unlike the growth from zero, the first connections' reuse of the heap freed after
    start-up does not flatter it (issue 19 asks for 5,000 to 7,500)."""
    by_kind: dict[str, list[Row]] = {}
    for r in rows:
        if "rss_idle_mib" in r:
            by_kind.setdefault(r["row"], []).append(r)
    for same in by_kind.values():
        same.sort(key=lambda r: r["connected"])
        for lo, hi in pairwise(same):
            added = hi["connected"] - lo["connected"]
            if added > 0:
                hi["step_kb"] = round((hi["rss_idle_mib"] - lo["rss_idle_mib"]) * 1024 / added, 2)


def scenario(bench: Bench) -> dict[str, Any]:
    rows = []
    for level in bench.args.memory_levels:
        for kind in ("baseline", "anygle-memory"):
            rows.append(
                bench.run_row(
                    f"memory {kind} {level}", partial(memory_row, bench, kind, level), kind
                )
            )
    marginal(rows)
    base = {r.get("connections"): r.get("per_conn_kb") for r in rows if r["row"] == "baseline"}
    step = {r.get("connections"): r.get("step_kb") for r in rows if r["row"] == "baseline"}
    for r in rows:
        if r["row"] != "baseline" and "per_conn_kb" in r:
            r["x_baseline"] = ratio(r["per_conn_kb"], base.get(r["connections"]))
            r["queued_x_baseline"] = ratio(r.get("per_queued_kb"), base.get(r["connections"]))
            r["step_x_baseline"] = ratio(r.get("step_kb"), step.get(r["connections"]))
    return {
        "rows": rows,
        "targets": {
            "anygle x_baseline per connection": "<= 1.2",
            "20k connections": "no errors",
        },
    }
