"""``python -m bench overload``: overload must slow the service down, never lose chats (issue 10).

Per engine (memory: one instance; Redis: two instances, every pair split across them):

1. the relay capacity of exactly these instances is measured first (``relay_row``, as in the relay
   scenario, unmoderated queue);
2. ``--overload-pairs`` pairs (default 100) send numbered 60-byte messages both ways at twice that
   capacity for ``--overload-seconds`` (default 60), an open loop held back only by TCP
   backpressure and by ``--overload-inflight`` unanswered messages per direction; meanwhile ten
   more connections to the first instance send bursts of 2,000 malformed frames each,
   reconnecting whenever the server closes them (``bench/overloadclient.py``);
3. while it runs, a thread polls every instance's ``/health`` (its ``reactorLagMs``: the worst
   timer lateness of the last 10 s, and how long ``/health`` took to answer) and, on Redis, the
   remaining TTL of every ``instance:{id}`` lease key (``PTTL`` every 50 ms): with a 2.5 s TTL
   renewed every 0.25 s, ``heartbeat lag = 2.25 s - min TTL left``; and, from ``/health``
   (``lease.heartbeatLatenessMs``), the reactor heartbeat's own worst lateness.

Then the messages still in flight are given ``--overload-drain`` s to arrive, and the row reports
delivered / lost / duplicated / reordered / chats ended by the server (``partner_*`` frames and
server-closed chat sockets) / max reactor lag / max heartbeat lag.

The **connect storm**: ``--storm-connections`` (default 5,000) connections opened at once against
the bare relay (``backlog=4096``) and against anygle with its default listener (no ``backlog=`` in
``--ws``): the time until every handshake is done (anygle: every ``connected`` frame).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
import urllib.request
from functools import partial
from typing import Any

from bench import procs
from bench.measure import servers_cpu
from bench.relay import relay_row
from bench.suite import Bench, Row

OPTIONS = (  # flag, type, default, help (after "overload: ")
    ("--overload-pairs", int, 100, "chatting pairs"),
    ("--overload-seconds", float, 60.0, "seconds"),
    ("--overload-factor", float, 2.0, "x the measured capacity"),
    ("--overload-inflight", int, 500, "unanswered messages per direction at most"),
    ("--overload-drain", float, 30.0, "s to wait for the rest"),
    ("--overload-flooders", int, 10, "malformed-frame flooders"),
    (
        "--overload-capacity-seconds",
        float,
        5.0,
        "seconds of the capacity measurement before each engine",
    ),
    ("--storm-connections", int, 5000, "simultaneous connects of the connect storm (0: no storm)"),
)
HEARTBEAT_TTL_MS = 2500  # anygle/engine/redis/liveness.py: Liveness.lease_ttl
HEARTBEAT_INTERVAL_MS = 250  # Liveness.renew_interval (the lease thread's renewals)


def add_options(p: argparse.ArgumentParser) -> None:
    """This scenario's options (``--overload-*``, ``--storm-connections``)."""
    p.add_argument(
        "--overload-engines",
        default=["memory", "redis"],
        type=lambda v: [x for x in v.split(",") if x],
        help="overload: engines to run (memory,redis)",
    )
    for flag, kind, default, what in OPTIONS:
        p.add_argument(flag, type=kind, default=default, help=f"overload: {what}")


class Watch(threading.Thread):
    """Polls ``/health`` of each instance and the heartbeat keys' PTTL until stopped."""

    def __init__(self, http_ports: dict[str, int], redis_port: int | None) -> None:
        super().__init__(daemon=True)
        self.http_ports = http_ports
        self.redis_port = redis_port
        self.stop_event = threading.Event()
        self.lag_ms: dict[str, float] = dict.fromkeys(http_ports, 0.0)
        self.beat_late_ms: dict[str, float] = dict.fromkeys(http_ports, 0.0)
        self.health_ms: dict[str, float] = dict.fromkeys(http_ports, 0.0)
        self.not_ok: dict[str, int] = dict.fromkeys(http_ports, 0)
        self.ttl_min_ms: dict[str, int | None] = dict.fromkeys(http_ports)
        self.ttl_missing: dict[str, int] = dict.fromkeys(http_ports, 0)
        self.health_thread = threading.Thread(target=self._health_loop, daemon=True)
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, str, float | None, float]] = []  # (s, name, lag, took)

    def run(self) -> None:
        self.health_thread.start()
        if self.redis_port is None:
            self.stop_event.wait()
            return
        sock: socket.socket | None = None
        while not self.stop_event.wait(0.05):
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.redis_port), timeout=2)
                for name in self.http_ports:
                    ttl = _pttl(sock, f"instance:{name}")
                    if ttl < 0:
                        self.ttl_missing[name] += 1
                        continue
                    old = self.ttl_min_ms[name]
                    self.ttl_min_ms[name] = ttl if old is None else min(old, ttl)
            except OSError:
                with contextlib.suppress(OSError):
                    if sock is not None:
                        sock.close()
                sock = None

    def _health_loop(self) -> None:
        while not self.stop_event.wait(0.25):
            for name, port in self.http_ports.items():
                t0 = time.monotonic()
                lag = None
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/health", timeout=10
                    ) as resp:
                        body = json.loads(resp.read())
                    lag = body.get("reactorLagMs")
                    if isinstance(lag, int | float):
                        self.lag_ms[name] = max(self.lag_ms[name], float(lag))
                    late = body.get("lease", {}).get("heartbeatLatenessMs")
                    if isinstance(late, int | float):
                        self.beat_late_ms[name] = max(self.beat_late_ms[name], float(late))
                    if body.get("status") != "ok":
                        self.not_ok[name] += 1
                except (OSError, ValueError):
                    self.not_ok[name] += 1
                took = (time.monotonic() - t0) * 1000.0
                self.health_ms[name] = max(self.health_ms[name], took)
                self.samples.append((round(t0 - self.t0, 2), name, lag, round(took, 1)))

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)
        self.health_thread.join(15)


def _pttl(sock: socket.socket, key: str) -> int:
    k = key.encode()
    sock.sendall(b"*2\r\n$4\r\nPTTL\r\n$%d\r\n%s\r\n" % (len(k), k))
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(64)
        if not chunk:
            raise OSError("redis closed the connection")
        data += chunk
    if not data.startswith(b":"):
        raise OSError(f"unexpected reply {data!r}")
    return int(data[1:-2])


def overload_row(bench: Bench, engine: str) -> Row:
    a = bench.args
    label = f"overload {engine}"
    with procs.group() as measured:
        servers: list[procs.Server] = []  # the anygle instances
        redis = procs.redis() if engine == "redis" else None
        measured += [redis] if redis else []
        url = f"redis://127.0.0.1:{redis.port}/0" if redis else None
        for name in ("a", "b") if redis else ("m",):
            servers.append(
                procs.anygle(engine, redis_url=url, instance=f"overload-{name}", extra=a.server_arg)
            )
            measured.append(servers[-1])
        targets = [("127.0.0.1", s.port) for s in servers]
        # 1. capacity of these very instances
        saved = a.duration, a.warmup
        a.duration, a.warmup = a.overload_capacity_seconds, min(a.warmup, 1.0)
        try:
            cap = relay_row(bench, f"capacity {engine}", measured, targets, "anygle")
        finally:
            a.duration, a.warmup = saved
        capacity = float(cap.get("rate") or 0.0)
        if capacity <= 0:
            raise RuntimeError(f"capacity not measured: {cap}")
        rate = a.overload_factor * capacity
        # 2. overload
        job = {
            "kind": "overload",
            "targets": targets,
            "pairs": a.overload_pairs,
            "rate": rate,
            "duration": a.overload_seconds,
            "drain": a.overload_drain,
            "inflight": a.overload_inflight,
            "flooders": a.overload_flooders,
            "flood_burst": 2000,
            "tag": f"ov{engine[:1]}{bench.run_id}",
            "queue": "unmoderated",
            "sources": bench.sources(2 * a.overload_pairs),
        }
        bench.progress.say(
            f"{label}: {a.overload_pairs} pairs at {rate:,.0f} msgs/s "
            f"({a.overload_factor:g}x the {capacity:,.0f} msgs/s measured), "
            f"{a.overload_flooders} flooders, {a.overload_seconds:g} s"
        )
        names = {s.name.split("-", 2)[-1]: s for s in servers}
        watch = Watch(
            {n: s.http_port or 0 for n, s in names.items()},
            redis.port if redis else None,
        )
        workers = procs.Workers([job], bench.progress, module="bench.overloadclient")
        cpu0 = servers_cpu(measured)
        t0 = time.monotonic()
        try:
            workers.wait("started", 20, label)
            workers.wait("ready", 60 + a.overload_pairs / 20, f"{label} setup")
            watch.start()
            deadline = time.monotonic() + a.overload_seconds + a.overload_drain + 60
            result = None
            while result is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: no result")
                workers.pump(0.25)
                done = next((e for e in workers.events[0] if e["ev"] == "result"), None)
                fatal = next((e for e in workers.events[0] if e["ev"] == "fatal"), None)
                if fatal:
                    raise RuntimeError(f"overload client: {fatal['error']}")
                if done:
                    result = done
                    break
                st = workers.state.get(0, {})
                bench.progress(
                    f"{label}: {st.get('phase')} sent {st.get('sent', 0):,} delivered "
                    f"{st.get('delivered', 0):,} ended {st.get('ended', 0)} | lag ms "
                    + " ".join(f"{n} {v:.0f}" for n, v in watch.lag_ms.items())
                    + (
                        " | ttl min ms " + " ".join(f"{n} {v}" for n, v in watch.ttl_min_ms.items())
                        if redis
                        else ""
                    )
                )
        finally:
            watch.stop()
            workers.close()
        secs = time.monotonic() - t0
        cpu1 = servers_cpu(measured)
        ttl_min = [v for v in watch.ttl_min_ms.values() if v is not None]
        row = {
            "row": f"{engine} x{len(servers)}",
            "engine": engine,
            "instances": len(servers),
            "capacity_rate": round(capacity, 1),
            "offered_rate": round(rate, 1),
            "sent_rate": result["sent_rate"],
            "seconds": a.overload_seconds,
            "pairs": a.overload_pairs,
            "sent": result["sent"],
            "delivered": result["delivered_unique"],
            "lost": result["lost"],
            "duplicated": result["duplicated"],
            "reordered": result["reordered"],
            "chats_ended": result["chats_ended"] + result["closed_by_server"],
            "ended_by_kind": result["ended_by_kind"],
            "closed_by_server": result["closed_by_server"],
            "held_back": result["held_back"],
            "flood_frames": result["flood_frames"],
            "flood_connections": result["flood_connections"],
            "flood_errors": result["flood_errors"],
            "errors": result["errors"],
            "max_reactor_lag_ms": round(max(watch.lag_ms.values()), 1),
            "reactor_lag_ms_by_instance": watch.lag_ms,
            # (seconds since the pairs were matched, instance, /health reactorLagMs, /health ms)
            "health_samples": watch.samples,
            "max_health_ms": round(max(watch.health_ms.values()), 1),
            "health_not_ok": sum(watch.not_ok.values()),
            "min_heartbeat_ttl_ms": min(ttl_min) if ttl_min else None,
            "max_heartbeat_lag_ms": (
                HEARTBEAT_TTL_MS - HEARTBEAT_INTERVAL_MS - min(ttl_min) if ttl_min else None
            ),
            "heartbeat_key_missing": sum(watch.ttl_missing.values()) if redis else None,
            "max_reactor_heartbeat_lateness_ms": (
                max(watch.beat_late_ms.values()) if redis else None
            ),
            "server_cpu_pct": round(100 * (sum(cpu1.values()) - sum(cpu0.values())) / secs, 1),
            "capacity_row": cap,
        }
        row.update(procs.died(servers))
        bench.progress.say(
            f"{label}: delivered {row['delivered']:,}/{row['sent']:,}, lost {row['lost']}, "
            f"dup {row['duplicated']}, reordered {row['reordered']}, ended {row['chats_ended']}, "
            f"max lag {row['max_reactor_lag_ms']} ms"
        )
        return row


def storm_row(bench: Bench, server: str) -> Row:
    a = bench.args
    n = a.storm_connections
    label = f"storm {server}"
    if server == "baseline":
        s = procs.baseline(backlog=4096)
        protocol = "baseline"
    else:
        s = procs.anygle("memory", instance="storm", extra=a.server_arg, backlog=None)
        protocol = "anygle"
    try:
        bench.progress.say(f"{label}: {n:,} connections at once")
        job = {
            "kind": "storm",
            "targets": [("127.0.0.1", s.port)],
            "n": n,
            "protocol": protocol,
            "sources": bench.sources(n),
            "per_source": a.per_source,
            "timeout": 120,
        }
        workers = procs.Workers([job], bench.progress, module="bench.overloadclient")
        try:
            workers.wait("started", 20, label)
            (result,) = workers.wait("result", 150, label)
        finally:
            workers.close()
        row = {"row": server, **{k: v for k, v in result.items() if k != "ev"}}
        if protocol == "anygle":
            row["seconds"] = result.get("all_connected_s")
        else:
            row["seconds"] = result.get("all_open_s")
        bench.progress.say(f"{label}: all open after {row['seconds']} s")
        return row
    finally:
        s.stop()


def scenario(bench: Bench) -> dict[str, Any]:
    a = bench.args
    rows = []
    engines = [
        e
        for e in a.overload_engines
        if e == "memory" or (e == "redis" and bench.redis_available()[0])
    ]
    for engine in engines:
        rows.append(
            bench.run_row(f"overload {engine}", partial(overload_row, bench, engine), engine)
        )
    storm = []
    if a.storm_connections:
        for server in ("baseline", "anygle"):
            storm.append(
                bench.run_row(f"storm {server}", partial(storm_row, bench, server), server)
            )
        base = next((r for r in storm if r["row"] == "baseline"), {})
        for r in storm:
            if base.get("seconds") and r.get("seconds"):
                r["x_baseline"] = round(r["seconds"] / base["seconds"], 2)
    if not bench.redis_available()[0]:
        bench.notes.append(f"overload redis: {bench.redis_available()[1]}")
    return {
        "rows": rows,
        "storm": storm,
        "pairs": a.overload_pairs,
        "seconds": a.overload_seconds,
        "factor": a.overload_factor,
        "flooders": a.overload_flooders,
        "storm_connections": a.storm_connections,
    }
