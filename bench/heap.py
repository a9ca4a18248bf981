"""The heap scenario: what an idle connection, then a queued user, holds on the server's Python
heap, anygle's memory engine against the bare relay; and, for anygle, which lines allocated it.

Each server runs under ``tracemalloc`` (``bench/heapdump.py``) and dumps a snapshot before the
connections are opened and once ``--heap-connections`` of them are connected and idle; for anygle
a second server does the same with every user waiting in a queue.  Per connection = the heap's
growth ÷ the connections.  Unlike the
memory scenario's RSS, this counts what the objects hold, not the allocator's free lists or the
start-up heap that the first connections reuse.  The allocation sites tell what a connection
holds beyond Autobahn's own state.
"""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from functools import partial
from typing import Any

from bench import procs
from bench.measure import ratio
from bench.memory import open_idle, settled
from bench.suite import Bench, Row

TOP = 12  # allocation sites listed per phase
KINDS = ("baseline", "anygle-memory")
# Both servers keep their ping timer per connection, but it does not fire while measured: a
# server under tracemalloc runs a few times slower, and with thousands of users queued a ping's
# 10 s timeout dropped connections.
QUIET_PINGS = "--ping-interval=600"


def add_options(p: Any) -> None:
    p.add_argument(
        "--heap-connections",
        type=int,
        default=5000,
        help="heap scenario: connections held (each server under tracemalloc)",
    )


def snapshot(server: procs.Server, directory: str, n: int, timeout: float = 120.0) -> Any:
    """Ask ``server`` for its ``n``-th heap snapshot and load it."""
    os.kill(server.pid, signal.SIGUSR2)
    path = os.path.join(directory, f"{n}.snap")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline or not server.alive():
            raise RuntimeError(f"{server.name}: no heap snapshot {n} after {timeout:g} s")
        time.sleep(0.1)
    return tracemalloc.Snapshot.load(path)


def owner(filename: str) -> str:
    """Whose code allocated: anygle, autobahn, twisted, txaio, or python (the standard
    library and the rest)."""
    for name in ("anygle", "autobahn", "twisted", "txaio"):
        if f"{os.sep}{name}{os.sep}" in filename:
            return name
    return "python"


def grown(before: Any, after: Any, count: int) -> dict[str, Any]:
    """Bytes per ``count`` connections the heap grew by, split by owner; the top sites, and
    the top sites in anygle's code (what a connection holds beyond Autobahn's own state)."""
    stats = after.compare_to(before, "lineno")
    count = max(count, 1)
    owners: dict[str, int] = {}
    ranked = sorted(stats, key=lambda s: -s.size_diff)
    ours = []
    for s in ranked:
        name = owner(s.traceback[0].filename)
        owners[name] = owners.get(name, 0) + s.size_diff
        if name == "anygle":
            ours.append(s)
    return {
        "bytes": round(sum(s.size_diff for s in stats) / count),
        "by_owner": {k: round(v / count) for k, v in sorted(owners.items(), key=lambda x: -x[1])},
        "top": [site(s, count) for s in ranked[:TOP]],
        "top_anygle": [site(s, count) for s in ours[:TOP] if s.size_diff > 0],
    }


def site(stat: Any, count: int) -> dict[str, Any]:
    frame = stat.traceback[0]
    return {
        "where": f"{short(frame.filename)}:{frame.lineno}",
        "bytes": round(stat.size_diff / count, 1),
        "blocks": round(stat.count_diff / count, 2),
    }


def short(filename: str) -> str:
    for marker in ("site-packages" + os.sep, "lib" + os.sep + "python3.11" + os.sep):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return os.path.relpath(filename, procs.REPO) if filename.startswith(procs.REPO) else filename


def held(bench: Bench, kind: str, join: bool) -> tuple[dict[str, Any], int]:
    """One server under tracemalloc: a snapshot, ``--heap-connections`` connections (idle, or
    with ``join`` all waiting in a queue), a snapshot; ``(growth, connections counted)``.  Each
    measure has a server of its own: a snapshot of thousands of connections holds the reactor
    for seconds, after which their ping timeouts would close some of them."""
    n = bench.args.heap_connections
    label = f"heap {kind} {n}" + (" queued" if join else "")
    directory = procs.tmpdir(f"anygle-bench-heap-{kind}-")
    with procs.group() as servers:
        if kind == "baseline":
            servers.append(s := procs.baseline(heap_dir=directory, extra=[QUIET_PINGS]))
        else:
            extra = [*bench.args.server_arg, QUIET_PINGS]
            servers.append(s := procs.anygle("memory", extra=extra, heap_dir=directory))
        time.sleep(1.0)
        start = snapshot(s, directory, 1)
        bench.progress.say(f"{label}: opening {n} connections")
        workers = open_idle(bench, kind, s, n, label, tag="heap")
        try:
            if join:
                workers.broadcast({"cmd": "join"})
                workers.wait("ready", 60 + n / 100, f"{label} queued")
            totals, _ = settled(workers, s)
            counted = totals["searching"] if join else totals["connected"]
            if totals["errors"] or totals["closed"]:
                raise RuntimeError(f"{label}: connections failed: {totals}")
            return grown(start, snapshot(s, directory, 2), counted), counted
        finally:
            workers.close()


def heap_row(bench: Bench, kind: str) -> Row:
    idle, connected = held(bench, kind, join=False)
    out: Row = {"row": kind, "connections": bench.args.heap_connections, "connected": connected}
    out["idle"], out["bytes_per_connection"] = idle, idle["bytes"]
    if kind != "baseline":
        queued, out["queued"] = held(bench, kind, join=True)
        out["queued_total"] = queued
        out["bytes_per_queued_extra"] = queued["bytes"] - idle["bytes"]
    bench.progress.say(f"heap {kind}: {out['bytes_per_connection']} bytes/connection")
    return out


def scenario(bench: Bench) -> dict[str, Any]:
    rows = [bench.run_row(f"heap {k}", partial(heap_row, bench, k), k) for k in KINDS]
    base = next((r for r in rows if r["row"] == "baseline" and "idle" in r), None)
    for r in rows:
        if r is not base and base and "idle" in r:
            r["x_baseline"] = ratio(r["bytes_per_connection"], base["bytes_per_connection"])
            r["anygle_bytes"] = r["idle"]["by_owner"].get("anygle", 0)
    return {"rows": rows, "target": "anygle x_baseline per connection <= 1.0 (issue 19)"}
