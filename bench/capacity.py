"""Redis capacity model (issue 20, item 7): what each user operation costs Redis, measured.

Two :class:`~anygle.engine.redis.RedisEngine` instances (``a`` and ``b``) run in this process
against a private, throw-away ``redis-server`` (:class:`tests.harness.RedisServer`; never the one
on 6379).  Each phase runs one kind of operation ``n`` times; ``INFO stats`` + ``INFO
commandstats`` and the redis-server CPU (its main thread from ``/proc/PID/task/PID/schedstat``,
ns resolution; the whole process from psutil, 10 ms ticks) are read before and after it.  A phase's
figures are (after - before - one snapshot's own cost - background rate x phase seconds) / n;
the background rate (heartbeats, lease renewals, idle ``XREAD BLOCK``) comes from an idle phase.

Usage: ``python -m bench.capacity [--n 1000] [--idle 3] [--load 4]``: prints a table, writes
``bench/results/capacity.json``; progress on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import psutil
from twisted.internet import defer, reactor, task

from anygle.engine.base import EngineConfig
from anygle.engine.redis import RedisEngine
from anygle.model import Match, Preferences
from tests.harness import RedisServer

RESULTS = Path(__file__).resolve().parent / "results" / "capacity.json"
FRAME = {"type": "message", "text": "hey, where are you from? i'm from lisbon :)"}
BATCH = 200  # operations in flight at once in a phase (the engine pipelines them)
STAT_KEYS = ("total_net_input_bytes", "total_net_output_bytes", "total_commands_processed")


def log(msg: str) -> None:
    print(f"[capacity {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Sink:
    """Counts the events an engine hands to its local users."""

    def __init__(self) -> None:
        self.counts = {"matched": 0, "left": 0, "relay": 0, "kick": 0, "undelivered": 0}

    def on_matched(self, user_id: str, match: Match) -> None:
        self.counts["matched"] += 1

    def on_partner_left(self, user_id: str, room_id: str, reason: str) -> None:
        self.counts["left"] += 1

    def on_relay(self, user_id: str, room_id: str, frame: dict[str, Any]) -> None:
        self.counts["relay"] += 1

    def on_kick(self, user_id: str, code: str, reason: str) -> None:
        self.counts["kick"] += 1

    def on_undelivered(self, user_id: str, room_id: str, frame: dict[str, Any]) -> None:
        self.counts["undelivered"] += 1

    def on_handover(self, user_id: str) -> dict[str, Any] | None:
        return None


# --- snapshots ----------------------------------------------------------------------------------


def parse_info(raw: bytes) -> dict[str, Any]:
    stats: dict[str, float] = {}
    cmds: dict[str, dict[str, float]] = {}
    for line in raw.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            fields = dict(kv.split("=") for kv in rest.split(","))
            cmds[name[len("cmdstat_") :]] = {
                "calls": float(fields["calls"]),
                "usec": float(fields["usec"]),
            }
        elif ":" in line:
            k, _, v = line.partition(":")
            if k in STAT_KEYS:
                stats[k] = float(v)
    return {"stats": stats, "cmds": cmds}


class Meter:
    """Snapshots of the redis-server: INFO counters and CPU."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        assert server.proc is not None
        self.pid = server.proc.pid
        self.proc = psutil.Process(self.pid)

    def main_thread_ns(self) -> int:
        with open(f"/proc/{self.pid}/task/{self.pid}/schedstat") as f:
            return int(f.read().split()[0])

    def snap(self) -> dict[str, Any]:
        info = parse_info(self.server.command("INFO", "stats", "commandstats"))
        t = self.proc.cpu_times()
        info["cpu_main_us"] = self.main_thread_ns() / 1000.0
        info["cpu_proc_us"] = (t.user + t.system) * 1e6
        info["t"] = time.monotonic()
        return info


def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Raw difference of two snapshots: flat dict of counters, plus seconds."""
    d: dict[str, float] = {k: b["stats"][k] - a["stats"].get(k, 0.0) for k in STAT_KEYS}
    for name, v in b["cmds"].items():
        before = a["cmds"].get(name, {"calls": 0.0, "usec": 0.0})
        if v["calls"] != before["calls"]:
            d[f"calls:{name}"] = v["calls"] - before["calls"]
            d[f"usec:{name}"] = v["usec"] - before["usec"]
    d["cpu_main_us"] = b["cpu_main_us"] - a["cpu_main_us"]
    d["cpu_proc_us"] = b["cpu_proc_us"] - a["cpu_proc_us"]
    return {"d": d, "seconds": b["t"] - a["t"]}


def minus(d: dict[str, float], other: dict[str, float], factor: float = 1.0) -> dict[str, float]:
    keys = set(d) | set(other)
    return {k: d.get(k, 0.0) - factor * other.get(k, 0.0) for k in keys}


# --- the reactor side -----------------------------------------------------------------------------


async def turn() -> None:
    await task.deferLater(reactor, 0, lambda: None)


async def until(pred: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise TimeoutError(what)
        await task.deferLater(reactor, 0.002, lambda: None)


async def batched(calls: list[Callable[[], defer.Deferred[Any]]]) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(calls), BATCH):
        out += await defer.gatherResults([c() for c in calls[i : i + BATCH]], consumeErrors=True)
    return out


def prefs(interest: str | None = None) -> Preferences:
    return Preferences("adult", "text", "moderated", (interest,) if interest else ())


class Run:
    def __init__(self, server: RedisServer, n: int) -> None:
        self.server = server
        self.meter = Meter(server)
        self.n = n
        self.phases: dict[str, dict[str, Any]] = {}
        self.overhead: dict[str, float] = {}
        self.bg_rate: dict[str, float] = {}

    async def phase(self, name: str, ops: int, body: Callable[[], Any], note: str = "") -> None:
        before = self.meter.snap()
        await body()
        after = self.meter.snap()
        raw = delta(before, after)
        d = minus(minus(raw["d"], self.overhead), self.bg_rate, raw["seconds"])
        per_op = {k: v / ops for k, v in d.items() if abs(v) > 1e-9}
        self.phases[name] = {
            "ops": ops,
            "seconds": round(raw["seconds"], 3),
            "ops_per_s": round(ops / raw["seconds"], 1),
            "note": note,
            "per_op": {k: round(v, 3) for k, v in sorted(per_op.items())},
            "redis_main_cpu_pct": round(100 * raw["d"]["cpu_main_us"] / raw["seconds"] / 1e6, 1),
        }
        p = per_op
        log(
            f"{name}: {ops} ops in {raw['seconds']:.2f} s; per op: "
            f"evalsha {p.get('calls:evalsha', 0):.2f}, "
            f"cmds {p.get('total_commands_processed', 0):.1f}, "
            f"in {p.get('total_net_input_bytes', 0):.0f} B, "
            f"out {p.get('total_net_output_bytes', 0):.0f} B, "
            f"main CPU {p.get('cpu_main_us', 0):.1f} us"
        )


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    server = RedisServer().start()
    try:
        return await _measure(server, args)
    finally:
        server.close()


async def _measure(server: RedisServer, args: argparse.Namespace) -> dict[str, Any]:
    n = args.n
    run = Run(server, n)
    sinks = {"a": Sink(), "b": Sink()}
    engines: dict[str, RedisEngine] = {}
    for name in ("a", "b"):
        engines[name] = RedisEngine(EngineConfig(instance_id=name, redis_url=server.url), reactor)
        await engines[name].start(sinks[name])
    a, b = engines["a"], engines["b"]
    sa, sb = sinks["a"], sinks["b"]
    await task.deferLater(reactor, 0.5, lambda: None)

    # the cost of a snapshot itself, then the background rate (both instances idle)
    s1 = run.meter.snap()
    s2 = run.meter.snap()
    run.overhead = delta(s1, s2)["d"]
    run.overhead["cpu_main_us"] = run.overhead["cpu_proc_us"] = 0.0  # too small to tell apart
    log(f"idle for {args.idle} s (background)")
    s1 = run.meter.snap()
    await task.deferLater(reactor, args.idle, lambda: None)
    s2 = run.meter.snap()
    idle = delta(s1, s2)
    run.bg_rate = {k: v / idle["seconds"] for k, v in minus(idle["d"], run.overhead).items()}
    background = {
        "seconds": round(idle["seconds"], 2),
        "per_instance_per_s": {k: round(v / 2, 3) for k, v in sorted(run.bg_rate.items())},
    }
    log(f"background per instance per s: {background['per_instance_per_s']}")

    q = [f"q{i}" for i in range(n)]
    la, lb = [f"la{i}" for i in range(n)], [f"lb{i}" for i in range(n)]
    xa, xb = [f"xa{i}" for i in range(n)], [f"xb{i}" for i in range(n)]
    on_a = q + la + lb + xa

    async def connect_all() -> None:
        await batched([partial(a.connect, u, "10.0.0.1") for u in on_a])
        await batched([partial(b.connect, u, "10.0.0.2") for u in xb])

    await run.phase("connect", 5 * n, connect_all)

    async def join_queued() -> None:
        await batched([partial(a.join, q[i], prefs(f"q{i}"), reactor.seconds()) for i in range(n)])

    await run.phase(
        "join_queued", n, join_queued, "one interest nobody else has: queued, no partner found"
    )

    async def queue_status_one() -> None:
        await batched([partial(a.queue_status, [u]) for u in q])

    await run.phase(
        "queue_status_1user", n, queue_status_one, f"one waiting user a call, {n} queued"
    )

    async def queue_status_all() -> None:
        for _ in range(20):
            await a.queue_status(q)

    await run.phase(
        "queue_status_per_user_in_batch", 20 * n, queue_status_all, f"20 calls of {n} users each"
    )

    async def disconnect_queued() -> None:
        await batched([partial(a.disconnect, u) for u in q])

    await run.phase("disconnect_queued", n, disconnect_queued, "users waiting in a queue")

    async def pairs(sa_: RedisEngine, us: list[str], sb_: RedisEngine, vs: list[str]) -> None:
        for i in range(0, n, BATCH):
            r = range(i, min(n, i + BATCH))
            now = reactor.seconds()
            await defer.gatherResults([sa_.join(us[k], prefs(f"p{us[k]}"), now) for k in r])
            got = await defer.gatherResults([sb_.join(vs[k], prefs(f"p{us[k]}"), now) for k in r])
            assert all(m is not None for m in got), "a second join did not match"

    async def match_local() -> None:
        await pairs(a, la, a, lb)

    await run.phase(
        "pair_local", n, match_local, "a queued join + the join that matches it, both on a"
    )

    async def match_cross() -> None:
        matched = sa.counts["matched"]
        await pairs(a, xa, b, xb)
        await until(lambda: sa.counts["matched"] >= matched + n, "a told of cross matches")

    await run.phase(
        "pair_cross", n, match_cross, "queued join on a, matching join on b (+ a's inbox event)"
    )

    room = {u: a.users[u].room for u in la + xa}
    assert all(room.values())

    async def relay_local() -> None:
        for i in range(n):
            a.relay(lb[i], room[la[i]] or "", FRAME)
            await turn()

    await run.phase("relay_local", n, relay_local, "partner on the same instance, one a turn")

    async def relay_cross(per_turn: int, msgs: int) -> None:
        got = sb.counts["relay"]
        for k in range(msgs):
            i = k % n
            a.relay(xb[i], room[xa[i]] or "", FRAME)
            if (k + 1) % per_turn == 0:
                await turn()
        await until(lambda: sb.counts["relay"] >= got + msgs, "relays arrived on b")

    m = 2 * n
    for per_turn in (1, 10, 100):
        await run.phase(
            f"relay_cross_{per_turn}_per_turn",
            m,
            partial(relay_cross, per_turn, m),
            f"partner on the other instance, {per_turn} relay(s) a reactor turn",
        )

    users_a = list(a.users)

    async def check_bans() -> None:
        for _ in range(20):
            await a.check_bans({u: ("10.0.0.1",) for u in users_a})

    await run.phase(
        "check_bans_per_user",
        20 * len(users_a),
        check_bans,
        f"the 1 s ban poll: 20 calls of {len(users_a)} users, one IP name each",
    )

    async def touch() -> None:
        for _ in range(10):
            await a._touch()

    await run.phase(
        "touch_per_user",
        10 * len(users_a),
        touch,
        f"the 60 s TTL refresh: 10 calls for {len(users_a)} users and {2 * n} rooms",
    )

    async def stats() -> None:
        await batched([a.stats for _ in range(500)])

    await run.phase("stats", 500, stats, "the stats script (each instance: every 5 s)")

    async def tick() -> None:
        for _ in range(500):
            await a.tick(reactor.seconds())

    await run.phase("tick", 500, tick, "matcher tick, empty queues (each instance: every 0.1 s)")

    async def skip_local() -> None:
        await batched([partial(a.leave_room, u, "skipped") for u in la])

    await run.phase(
        "skip_local", n, skip_local, "leave_room 'skipped', partner on the same instance"
    )

    async def skip_cross() -> None:
        left = sb.counts["left"]
        await batched([partial(a.leave_room, u, "skipped") for u in xa])
        await until(lambda: sb.counts["left"] >= left + n, "b told of the skips")

    await run.phase(
        "skip_cross", n, skip_cross, "leave_room 'skipped', partner on b (+ b's inbox event)"
    )

    async def disconnect_idle() -> None:
        await batched([partial(a.disconnect, u) for u in la + lb + xa])
        await batched([partial(b.disconnect, u) for u in xb])

    await run.phase("disconnect_idle", 4 * n, disconnect_idle, "users in no room and no queue")

    load = await saturate(run, engines, args.load) if args.load > 0 else None
    for e in engines.values():
        await e.stop()
    return {"phases": run.phases, "background": background, "load": load}


async def saturate(run: Run, engines: dict[str, RedisEngine], seconds: float) -> dict[str, Any]:
    """Cross-check under load: as many user cycles (connect both, queued join, matching join on
    the other instance, skip, disconnect both: 7 scripts) as this one process can drive."""
    a, b = engines["a"], engines["b"]
    log(f"load: user cycles for {seconds} s")
    cycles = 0
    stop_at = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal cycles
        k = 0
        while time.monotonic() < stop_at:
            u, v = f"s{w}-{k}a", f"s{w}-{k}b"
            k += 1
            await defer.gatherResults([a.connect(u, "10.0.0.3"), b.connect(v, "10.0.0.4")])
            now = reactor.seconds()
            await a.join(u, prefs(f"w{w}"), now)
            if await b.join(v, prefs(f"w{w}"), now) is None:
                raise RuntimeError("load: no match")
            await a.leave_room(u, "skipped")
            await defer.gatherResults([a.disconnect(u), b.disconnect(v)])
            cycles += 1

    before = run.meter.snap()
    await defer.gatherResults([defer.ensureDeferred(worker(w)) for w in range(300)])
    after = run.meter.snap()
    raw = delta(before, after)
    d, secs = raw["d"], raw["seconds"]
    py = psutil.Process().cpu_times()
    return {
        "seconds": round(secs, 2),
        "cycles": cycles,
        "cycles_per_s": round(cycles / secs, 1),
        "evalsha_per_s": round(d.get("calls:evalsha", 0) / secs, 1),
        "redis_main_cpu_pct": round(100 * d["cpu_main_us"] / secs / 1e6, 1),
        "redis_proc_cpu_pct": round(100 * d["cpu_proc_us"] / secs / 1e6, 1),
        "redis_main_us_per_cycle": round(d["cpu_main_us"] / max(1, cycles), 1),
        "net_bytes_per_cycle": round(
            (d["total_net_input_bytes"] + d["total_net_output_bytes"]) / max(1, cycles), 1
        ),
        "driver_cpu_s_total": round(py.user + py.system, 1),
        "note": "300 workers in this one Python process (both engines and the driver)",
    }


# --- the per-user model (every figure below is an ASSUMPTION, not a measurement) ------------------

ASSUMPTIONS = {
    "session_s": 600.0,  # average time a user stays connected
    "chat_s": 60.0,  # average chat length before a skip (so a pair forms every 120 user-s)
    "frames_per_user_min": 10.0,  # relayed frames a user sends (chat lines + typing notices)
    "cross_fraction": 1.0,  # pairs on different instances ((K-1)/K with K instances: ~1)
    "waiting_fraction": 0.05,  # users waiting in a queue at a time (searching pushed every 3 s)
    "rooms_per_user": 0.5,  # live rooms per connected user (touch refreshes them every 60 s)
    "redis_target_util": 0.5,  # a primary's main thread planned at 50 % busy (bursts, failover)
    "instance_us_per_frame": 90.0,  # docs/performance.md: teen, varied lines, 84-93 us/message
    "instance_target_util": 0.5,  # an instance's one core planned at 50 % busy
    "instance_max_connections": 20000,  # docs/performance.md: 19,936 measured (file limit cap)
}


def model(result: dict[str, Any], relay_row: str) -> dict[str, Any]:
    """Redis main-thread us per connected user per second, and the primaries and instances that
    100k and 1M users need, from the measured per-op CPU and :data:`ASSUMPTIONS`."""
    a = ASSUMPTIONS
    ph = result["phases"]

    def us(name: str) -> float:
        return float(ph[name]["per_op"].get("cpu_main_us", 0.0))

    pair_rate = 1.0 / (2 * a["chat_s"])  # pairs formed (and skipped) per user per second
    frames = a["frames_per_user_min"] / 60.0
    relay = a["cross_fraction"] * us(relay_row) + (1 - a["cross_fraction"]) * us("relay_local")
    pair = a["cross_fraction"] * us("pair_cross") + (1 - a["cross_fraction"]) * us("pair_local")
    skip = a["cross_fraction"] * us("skip_cross") + (1 - a["cross_fraction"]) * us("skip_local")
    per_user = {
        "connect+disconnect": (us("connect") + us("disconnect_idle")) / a["session_s"],
        "pairs (queued join + matching join)": pair * pair_rate,
        "skips": skip * pair_rate,
        "relayed frames": relay * frames,
        "ban poll (1 s)": us("check_bans_per_user"),
        "searching (3 s)": a["waiting_fraction"] * us("queue_status_per_user_in_batch") / 3.0,
        "touch (60 s)": us("touch_per_user") * (1 + a["rooms_per_user"]) / 60.0,
    }
    bg = result["background"]["per_instance_per_s"]
    per_instance = {
        "heartbeat + lease + idle XREAD": float(bg.get("cpu_main_us", 0.0)),
        "tick (0.1 s)": us("tick") * 10,
        "stats (5 s)": us("stats") / 5,
    }
    user_us = sum(per_user.values())
    inst_us = sum(per_instance.values())
    inst_user_us = frames * a["instance_us_per_frame"]
    users_per_instance = min(
        a["instance_max_connections"], a["instance_target_util"] * 1e6 / inst_user_us
    )
    sizes = {}
    for users in (100_000, 1_000_000):
        k = -(-users // int(users_per_instance))
        total = users * user_us + k * inst_us
        sizes[str(users)] = {
            "instances": k,
            "redis_main_us_per_s": round(total),
            "redis_cores_busy": round(total / 1e6, 2),
            "primaries": -(-int(total) // int(a["redis_target_util"] * 1e6)),
        }
    return {
        "assumptions": a,
        "relay_row": relay_row,
        "per_user_us_per_s": {k: round(v, 3) for k, v in per_user.items()},
        "per_user_total_us_per_s": round(user_us, 2),
        "per_instance_us_per_s": {k: round(v, 1) for k, v in per_instance.items()},
        "users_per_primary_at_target": round(a["redis_target_util"] * 1e6 / user_us),
        "users_per_primary_at_100pct": round(1e6 / user_us),
        "users_per_instance": round(users_per_instance),
        "sizes": sizes,
    }


# --- output ---------------------------------------------------------------------------------------

ROWS = (
    "connect",
    "join_queued",
    "pair_local",
    "pair_cross",
    "relay_local",
    "relay_cross_1_per_turn",
    "relay_cross_10_per_turn",
    "relay_cross_100_per_turn",
    "skip_local",
    "skip_cross",
    "disconnect_queued",
    "disconnect_idle",
    "queue_status_1user",
    "queue_status_per_user_in_batch",
    "check_bans_per_user",
    "touch_per_user",
    "stats",
    "tick",
)


def table(result: dict[str, Any]) -> str:
    head = (
        "| operation | n | EVALSHA | XADD | XREAD | cmds (all) | evalsha us | bytes in | bytes out "
        "| Redis main-thread CPU us | Redis process CPU us |"
    )
    lines = [head, "|" + "---|" * 11]
    for name in ROWS:
        ph = result["phases"].get(name)
        if ph is None:
            continue
        p = ph["per_op"]
        lines.append(
            f"| {name} | {ph['ops']} | {p.get('calls:evalsha', 0):.2f} "
            f"| {p.get('calls:xadd', 0):.2f} "
            f"| {p.get('calls:xread', 0):.2f} | {p.get('total_commands_processed', 0):.1f} "
            f"| {p.get('usec:evalsha', 0):.1f} | {p.get('total_net_input_bytes', 0):.0f} "
            f"| {p.get('total_net_output_bytes', 0):.0f} | {p.get('cpu_main_us', 0):.1f} "
            f"| {p.get('cpu_proc_us', 0):.1f} |"
        )
    bg = result["background"]["per_instance_per_s"]
    lines.append(
        f"| background, per instance per s | - | {bg.get('calls:evalsha', 0):.2f} | - "
        f"| {bg.get('calls:xread', 0):.2f} | {bg.get('total_commands_processed', 0):.1f} "
        f"| {bg.get('usec:evalsha', 0):.1f} | {bg.get('total_net_input_bytes', 0):.0f} "
        f"| {bg.get('total_net_output_bytes', 0):.0f} | {bg.get('cpu_main_us', 0):.1f} "
        f"| {bg.get('cpu_proc_us', 0):.1f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__)
    p.add_argument("--n", type=int, default=1000, help="operations per phase (pairs, users)")
    p.add_argument("--idle", type=float, default=3.0, help="seconds of the idle phase")
    p.add_argument("--load", type=float, default=4.0, help="seconds of the load phase (0: off)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    started = time.monotonic()
    version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()

    async def go(_: Any) -> None:
        result = await measure(args)
        result["meta"] = {
            "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
            "redis": version,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "n": args.n,
            "batch_in_flight": BATCH,
            "frame_bytes": len(json.dumps(FRAME)),
            "run_seconds": round(time.monotonic() - started, 1),
            "method": __doc__,
        }
        result["model"] = {
            "one_relay_per_turn": model(result, "relay_cross_1_per_turn"),
            "ten_relays_per_turn": model(result, "relay_cross_10_per_turn"),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(table(result))
        if result["load"]:
            print("load:", json.dumps(result["load"]))
        for name, m in result["model"].items():
            print(f"model ({name}): {m['per_user_total_us_per_s']} us/user/s; {m['sizes']}")
        log(f"wrote {args.out} in {time.monotonic() - started:.0f} s")

    task.react(lambda r: defer.ensureDeferred(go(r)), [])


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
