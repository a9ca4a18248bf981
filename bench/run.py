"""Anygle benchmark suite: ``python -m bench [SCENARIO ...] [options]`` (see ``--help``).

Scenarios (all by default, in this order):

``relay``     N matched pairs exchange 60-byte chat messages with a window; delivered messages/s
              for the bare relay (``bench/baseline_relay.py``), anygle memory engine with
              moderation off ('unmoderated') and on ('moderated'), Redis engine same-instance
              and cross-instance.  Ratios against the baseline measured in the same run.
``latency``   joins arrive at a set rate into one queue; join -> matched as the client sees it.
``memory``    RSS growth per idle connected user and per queued user, anygle vs the bare relay.
``scaleout``  total relay throughput through nginx: 1 vs 2 anygle instances.
``overload``  (only when named) each engine at 2x its measured relay capacity for 60 s plus a
              flood of malformed frames: lost / duplicated / reordered / ended chats, reactor
              and heartbeat lag; and a connect storm of 5,000 against the bare relay
              (``bench/overload.py``).

Every server, Redis, nginx and each load worker is its own process; all are killed at the end.
Results: a table on stdout, JSON (and a PNG) in ``bench/results/<name>.*`` (the latest run).
``python -m bench compare BEFORE.json AFTER.json`` puts the ratios of two runs side by side.
These are measurements, not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil

if __package__ in (None, ""):  # ``python bench/run.py``: make ``bench`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import overload, procs

RESULTS = os.path.join(procs.REPO, "bench", "results")
CONTENT = "hey there! how is your day going? i am bored, want to chat ?"  # 60 bytes, benign
assert len(CONTENT.encode()) == 60
SCENARIOS = ("relay", "latency", "memory", "scaleout")
EXTRA_SCENARIOS = ("overload",)  # run only when named

TARGETS = {
    "memory-on/baseline": 0.6,
    "cross/same": 0.5,
    "latency_p50_ms": 5.0,
    "latency_p99_ms": 25.0,
    "rss_per_conn/baseline": 1.2,
}


# --- output ---------------------------------------------------------------------------------
class Progress:
    """One status line on a terminal (rewritten in place), throttled lines otherwise."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.t0 = time.monotonic()

    def __call__(self, msg: str, force: bool = False) -> None:
        now = time.monotonic()
        stamp = f"[{now - self.t0:6.1f}s] "
        if self.tty:
            self.stream.write("\r\033[K" + (stamp + msg)[:160])
            if force:
                self.stream.write("\n")
        elif force or now - self.last >= 2.0:
            self.stream.write(stamp + msg + "\n")
        else:
            return
        self.last = now
        self.stream.flush()

    def say(self, msg: str) -> None:
        self(msg, force=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 3)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


# --- the harness --------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, progress: Progress) -> None:
        self.args = args
        self.progress = progress
        self.run_id = dt.datetime.now(dt.UTC).strftime("%H%M%S")
        self.next_source = 2  # 127.0.0.2, 127.0.0.3, ...
        self.notes: list[str] = []
        self.nofile = 1 << 20

    # --- helpers ------------------------------------------------------------------------------
    def sources(self, n: int) -> list[str]:
        """Distinct loopback source addresses for ``n`` connections (per_source each)."""
        per = self.args.per_source
        count = max(1, -(-n // per))
        out = []
        for _ in range(count):
            if self.next_source > 254:
                self.next_source = 2
            out.append(f"127.0.0.{self.next_source}")
            self.next_source += 1
        return out

    def jobs(
        self,
        kind: str,
        total: int,
        *,
        protocol: str,
        targets: list[tuple[str, int]],
        tag: str,
        queue: str = "unmoderated",
        pairs: bool = False,
        workers: int | None = None,
    ) -> list[dict[str, Any]]:
        """Split ``total`` connections over the workers (whole pairs when ``pairs``)."""
        w = max(1, min(workers or self.args.workers, total // 2 or 1))
        unit = 2 if pairs else 1
        units = total // unit
        jobs = []
        for i in range(w):
            n = (units // w + (1 if i < units % w else 0)) * unit
            if kind == "latency" and n % 2:
                n += 1
            jobs.append(
                {
                    "kind": kind,
                    "n": n,
                    "protocol": protocol,
                    "targets": targets,
                    "tag": f"{tag}{self.run_id}w{i}",
                    "queue": queue,
                    "content": CONTENT,
                    "sources": self.sources(n),
                    "per_source": self.args.per_source,
                    "concurrency": self.args.concurrency,
                }
            )
        return jobs

    def redis_available(self) -> tuple[bool, str]:
        if self.args.no_redis:
            return False, "skipped (--no-redis)"
        if importlib.util.find_spec("anygle.engine.redis") is None:
            return False, "anygle/engine/redis.py does not exist yet"
        if not os.path.exists("/usr/bin/redis-server") and not shutil_which("redis-server"):
            return False, "redis-server is not installed (apt-get install redis-server)"
        return True, ""

    def servers_cpu(self, servers: list[procs.Server]) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in servers:
            with contextlib.suppress(psutil.Error):
                out[s.name] = s.cpu()
        return out

    # --- relay ---------------------------------------------------------------------------------
    def relay_row(
        self,
        row: str,
        servers: list[procs.Server],
        targets: list[tuple[str, int]],
        protocol: str,
        queue: str = "unmoderated",
        pairs: int | None = None,
    ) -> dict[str, Any]:
        a = self.args
        pairs = pairs or a.pairs
        label = f"relay {row}"
        self.progress.say(
            f"{label}: {pairs} pairs, window {a.window}, {a.warmup:g}+{a.duration:g} s"
        )
        workers = procs.Workers(
            self.jobs(
                "relay",
                pairs * 2,
                protocol=protocol,
                targets=targets,
                tag=row[:6],
                queue=queue,
                pairs=True,
            ),
            self.progress,
        )
        try:
            workers.wait("started", 20, label)
            setup = workers.wait("ready", 60 + pairs / 50, f"{label} setup")
            ready = workers.totals()
            workers.broadcast(
                {"cmd": "go", "warmup": a.warmup, "duration": a.duration, "window": a.window}
            )
            end = time.monotonic() + a.warmup
            while time.monotonic() < end:
                workers.pump(0.1)
                self.progress(f"{label}: warming up ({workers.summary()})")
            s0, c0, t0 = self.servers_cpu(servers), workers.cpu(), time.monotonic()
            m0, h0, st0 = busy_cpu(), self_cpu(), steal_cpu()
            end = t0 + a.duration
            d0 = workers.totals()["delivered"]
            while time.monotonic() < end:
                workers.pump(0.1)
                d = workers.totals()["delivered"] - d0
                el = time.monotonic() - t0
                self.progress(f"{label}: {d / max(el, 1e-3):,.0f} msgs/s so far")
            s1, c1, t1 = self.servers_cpu(servers), workers.cpu(), time.monotonic()
            m1, h1, st1 = busy_cpu(), self_cpu(), steal_cpu()
            results = workers.wait("result", 30, label)
        finally:
            workers.close()
        secs = t1 - t0
        rate = sum(r["rate"] for r in results)
        errors: dict[str, int] = {}
        for r in results:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        out = {
            "row": row,
            "pairs": pairs,
            "matched_pairs": ready.get("matched", 0) // 2,
            "mispaired": ready.get("mispaired", 0),
            "rate": round(rate, 1),
            "server_cpu_pct": round(100 * (sum(s1.values()) - sum(s0.values())) / secs, 1),
            "cpu_pct_by_process": {k: round(100 * (s1[k] - s0.get(k, 0.0)) / secs, 1) for k in s1},
            "client_cpu_pct": round(100 * (c1 - c0) / secs, 1),
            # everything else on the (shared) machine in the same window: a noise indicator
            "other_cpu_pct": round(
                100
                * ((m1 - m0) - (sum(s1.values()) - sum(s0.values())) - (c1 - c0) - (h1 - h0))
                / secs,
                1,
            ),
            "steal_cpu_pct": round(100 * (st1 - st0) / secs, 1),
            # server CPU per delivered message: steadier than the rate on a busy machine
            "server_us_per_msg": round(
                (sum(s1.values()) - sum(s0.values())) / max(rate * secs, 1) * 1e6, 2
            ),
            "load_avg": round(os.getloadavg()[0], 2),
            "workers": len(results),
            "failed": sum(r["failed"] for r in results),
            "closed": sum(r["closed"] for r in results),
            "errors": errors,
        }
        del setup
        for s in servers:
            if not s.alive():
                out["error"] = f"{s.name} died: {procs.tail(s.log, 5)}"
        self.progress.say(
            f"{label}: {rate:,.0f} msgs/s (server CPU {out['server_cpu_pct']}%, "
            f"clients {out['client_cpu_pct']}%)"
        )
        return out

    def run_row(self, label: str, fn: Callable[[], dict[str, Any]], row: str) -> dict[str, Any]:
        try:
            return fn()
        except Exception as e:  # a failing row is reported, the suite goes on
            self.progress.say(f"{label}: FAILED: {e}")
            return {"row": row, "error": f"{type(e).__name__}: {e}"[:3000]}

    def relay_baseline(self) -> dict[str, Any]:
        s = procs.baseline()
        try:
            return self.relay_row("baseline", [s], [("127.0.0.1", s.port)], "baseline")
        finally:
            s.stop()

    def relay_memory(self, queue: str, row: str) -> dict[str, Any]:
        s = procs.anygle("memory", extra=self.args.server_arg)
        try:
            return self.relay_row(row, [s], [("127.0.0.1", s.port)], "anygle", queue)
        finally:
            s.stop()

    def relay_redis(self, cross: bool, row: str) -> dict[str, Any]:
        r = procs.redis()
        servers: list[procs.Server] = []
        try:
            for name in ("a", "b") if cross else ("a",):
                servers.append(
                    procs.anygle(
                        "redis",
                        redis_url=f"redis://127.0.0.1:{r.port}/0",
                        instance=f"bench-{name}",
                        extra=self.args.server_arg,
                    )
                )
            targets = [("127.0.0.1", s.port) for s in servers]
            out = self.relay_row(row, [*servers, r], targets, "anygle", self.args.redis_queue)
            out["redis_cpu_pct_included"] = True
            return out
        except Exception as e:
            logs = "\n".join(f"--- {s.name}\n{procs.tail(s.log, 8)}" for s in servers)
            raise RuntimeError(f"{e}\n{logs}") from None
        finally:
            for s in servers:
                s.stop()
            r.stop()

    def repeated(
        self, label: str, plan: list[tuple[str, Callable[[], dict[str, Any]]]]
    ) -> list[dict[str, Any]]:
        """Run the rows of ``plan`` ``--repeat`` times, interleaved (so that drift on a noisy
        machine hits every row alike); each row reports the median rate of its good runs."""
        runs: dict[str, list[dict[str, Any]]] = {}
        for rep in range(self.args.repeat):
            if self.args.repeat > 1:
                self.progress.say(f"{label} round {rep + 1}/{self.args.repeat}")
            for row, fn in plan:
                runs.setdefault(row, []).append(self.run_row(f"{label} {row}", fn, row))
        rows = []
        for row, results in runs.items():
            good = sorted(
                (r for r in results if "error" not in r and r.get("rate")), key=lambda r: r["rate"]
            )
            quiet = [r for r in good if not disturbed(r)]
            if quiet and len(quiet) < len(good):
                best_note = f"{len(good) - len(quiet)} disturbed run(s) left out"
                good = quiet
            else:
                best_note = ""
            # the run with the median rate (the lower middle one for an even count) stands for
            # the row, so that its CPU figures belong to its rate
            best = dict(good[(len(good) - 1) // 2] if good else results[-1])
            best["row"] = row
            if good:
                best["rates"] = [r["rate"] for r in good]
            best["rates_by_round"] = [r.get("rate") for r in results]
            best["other_cpu_by_round"] = [r.get("other_cpu_pct") for r in results]
            best["us_by_round"] = [r.get("server_us_per_msg") for r in results]
            if best_note:
                best["disturbed"] = best_note
            if len(good) < len(results):
                best["failed_runs"] = [r["error"] for r in results if "error" in r]
            rows.append(best)
        return rows

    @staticmethod
    def paired_ratio(row: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
        """Median over rounds of row/ref measured in the same round (robust to drift), else the
        ratio of the medians."""
        if not ref:
            return None
        rounds = list(
            zip(
                row.get("rates_by_round") or [],
                ref.get("rates_by_round") or [],
                row.get("other_cpu_by_round") or [],
                ref.get("other_cpu_by_round") or [],
                strict=False,
            )
        )
        pairs = [a / b for a, b, oa, ob in rounds if a and b and max(oa or 0, ob or 0) <= NOISY]
        if not pairs:  # every round was disturbed: use them all, the table says so
            pairs = [a / b for a, b, _, _ in rounds if a and b]
        if pairs:
            return round(statistics.median(pairs), 3)
        return ratio(row.get("rate"), ref.get("rate"))

    def scenario_relay(self) -> dict[str, Any]:
        a = self.args
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("baseline", self.relay_baseline),
            ("memory-off", lambda: self.relay_memory("unmoderated", "memory-off")),
            ("memory-on", lambda: self.relay_memory("moderated", "memory-on")),
        ]
        ok, why = self.redis_available()
        if ok:
            plan += [
                ("redis-same", lambda: self.relay_redis(False, "redis-same")),
                ("redis-cross", lambda: self.relay_redis(True, "redis-cross")),
            ]
        if a.rows:
            plan = [(row, fn) for row, fn in plan if row in a.rows]
        rows = self.repeated("relay", plan)
        if not ok:
            for row in ("redis-same", "redis-cross"):
                rows.append({"row": row, "error": f"not run: {why}"})
        by = {r["row"]: r for r in rows}
        for r in rows:
            r["x_baseline"] = self.paired_ratio(r, by.get("baseline"))
            r["x_baseline_per_cpu"] = cpu_ratio(r, by.get("baseline"))
            if r["row"] == "redis-cross":
                r["x_same_instance"] = self.paired_ratio(r, by.get("redis-same"))
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

    # --- latency -------------------------------------------------------------------------------
    def latency_row(self, engine: str, quiet: bool = False) -> dict[str, Any]:
        """``quiet``: with the periodic ``stats``/``searching`` pushes turned off, to tell the
        matching path from the stalls those pushes cause."""
        a = self.args
        extra = [*a.server_arg]
        if quiet:
            extra += ["--stats-interval", "86400", "--searching-interval", "86400"]
        total = int(a.rate * a.latency_seconds)
        total += total % 2
        r = None
        servers: list[procs.Server] = []
        try:
            if engine == "redis":
                r = procs.redis()
                servers.append(
                    procs.anygle("redis", redis_url=f"redis://127.0.0.1:{r.port}/0", extra=extra)
                )
            else:
                servers.append(procs.anygle("memory", extra=extra))
            s = servers[0]
            label = f"latency {engine}" + (" (pushes off)" if quiet else "")
            self.progress.say(f"{label}: {total} joins at {a.rate:g}/s into one queue")
            jobs = self.jobs(
                "latency",
                total,
                protocol="anygle",
                targets=[("127.0.0.1", s.port)],
                tag="lat",
                queue=a.latency_queue,
            )
            workers = procs.Workers(jobs, self.progress)
            try:
                workers.wait("started", 20, label)
                workers.wait("ready", 60 + total / 200, f"{label} connect")
                w = len(jobs)
                window = CpuWindow([*servers, *([r] if r else [])], workers)
                for i in range(w):
                    workers.send(
                        i,
                        {"cmd": "go", "rate": a.rate / w, "offset": 0.2 + i / a.rate, "grace": 3.0},
                    )
                results = workers.wait("result", a.latency_seconds + 60, label)
                cpu = window.stop()
            finally:
                workers.close()
        except Exception as e:
            logs = "\n".join(f"--- {s.name}\n{procs.tail(s.log, 8)}" for s in servers)
            raise RuntimeError(f"{e}\n{logs}") from None
        finally:
            for s in servers:
                s.stop()
            if r is not None:
                r.stop()
        lat = [x for res in results for x in res["latencies"]]
        joiner = [
            x
            for res in results
            for x, i in zip(res["latencies"], res["initiator"], strict=True)
            if not i
        ]
        errors: dict[str, int] = {}
        for res in results:
            for k, v in res["errors"].items():
                errors[k] = errors.get(k, 0) + v
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
            "errors": errors,
            "samples": sorted(round(x, 2) for x in lat),
        }
        self.progress.say(
            f"{label}: median {out['p50_ms']} ms, p99 {out['p99_ms']} ms "
            f"({out['matched']}/{out['joins']} matched)"
        )
        return out

    def scenario_latency(self) -> dict[str, Any]:
        ok, why = self.redis_available()
        rows = []
        for quiet in (False, True) if self.args.latency_quiet else (False,):
            for engine in ("memory", "redis"):
                row = engine + (" (pushes off)" if quiet else "")
                if engine == "redis" and not ok:
                    rows.append({"row": row, "error": f"not run: {why}"})
                    continue
                rows.append(
                    self.run_row(
                        f"latency {row}", lambda e=engine, q=quiet: self.latency_row(e, q), row
                    )
                )
        return {
            "rows": rows,
            "rate": self.args.rate,
            "seconds": self.args.latency_seconds,
            "queue": self.args.latency_queue,
            "targets": {"redis p50_ms": "<= 5", "redis p99_ms": "<= 25"},
            "note": "all users: join -> matched incl. waiting for the next arrival; "
            "joiner: the user whose join completed the pair (server path only)",
        }

    # --- memory --------------------------------------------------------------------------------
    def probe(
        self, workers: procs.Workers, label: str, servers: list[procs.Server]
    ) -> dict[str, Any]:
        """WebSocket ping round trips from one connection for --probe-seconds (reactor stalls)."""
        secs = self.args.probe_seconds
        if secs <= 0:
            return {}
        self.progress.say(f"{label}: probing the reactor for {secs:g} s")
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

    def memory_row(self, kind: str, requested: int) -> dict[str, Any]:
        # one server process holds every connection: it cannot go past its file limit
        level = min(requested, self.nofile - 64)
        note = (
            f"memory: {requested} connections capped to {level} by the file "
            f"limit {self.nofile} (raise the hard limit to measure more)"
        )
        if level < requested and note not in self.notes:
            self.notes.append(note)
        s = (
            procs.baseline()
            if kind == "baseline"
            else procs.anygle("memory", extra=self.args.server_arg)
        )
        label = f"memory {kind} {level}"
        try:
            time.sleep(1.0)
            rss0 = s.rss()
            self.progress.say(
                f"{label}: opening {level} connections (server RSS {rss0 / 2**20:.1f} MiB)"
            )
            workers = procs.Workers(
                self.jobs(
                    "idle",
                    level,
                    protocol="baseline" if kind == "baseline" else "anygle",
                    targets=[("127.0.0.1", s.port)],
                    tag="mem",
                ),
                self.progress,
            )
            try:
                workers.wait("started", 20, label)
                workers.wait("ready", 60 + level / 200, label)
                time.sleep(2.0)
                workers.pump(0)
                idle = workers.totals()
                rss1 = s.rss()
                stall_idle = self.probe(workers, label, [s])
                out = {
                    "row": kind,
                    "connections": requested,
                    "opened": level,
                    "connected": idle["connected"],
                    "failed": idle["failed"],
                    "closed": idle["closed"],
                    "rss_start_mib": round(rss0 / 2**20, 1),
                    "rss_idle_mib": round(rss1 / 2**20, 1),
                    "per_conn_kb": round((rss1 - rss0) / max(idle["connected"], 1) / 1024, 2),
                }
                out["stall_idle"] = stall_idle
                if kind != "baseline":
                    workers.broadcast({"cmd": "join"})
                    workers.wait("ready", 60 + level / 200, f"{label} queued")
                    time.sleep(2.0)
                    workers.pump(0)
                    queued = workers.totals()
                    rss2 = s.rss()
                    out["stall_queued"] = self.probe(workers, label + " queued", [s])
                    out.update(
                        queued=queued["searching"],
                        rss_queued_mib=round(rss2 / 2**20, 1),
                        per_queued_extra_kb=round(
                            (rss2 - rss1) / max(queued["searching"], 1) / 1024, 2
                        ),
                    )
                    out["per_queued_kb"] = round(out["per_conn_kb"] + out["per_queued_extra_kb"], 2)
                out["errors"] = workers.totals()["errors"]
                out["server_alive"] = s.alive()
            finally:
                workers.close()
        finally:
            s.stop()
        self.progress.say(
            f"{label}: {out['per_conn_kb']} KB/connection"
            + (f", {out.get('per_queued_kb')} KB/queued user" if "per_queued_kb" in out else "")
        )
        return out

    def scenario_memory(self) -> dict[str, Any]:
        rows = []
        for level in self.args.memory_levels:
            for kind in ("baseline", "anygle-memory"):
                rows.append(
                    self.run_row(
                        f"memory {kind} {level}",
                        lambda k=kind, n=level: self.memory_row(k, n),
                        kind,
                    )
                )
        base = {r.get("connections"): r.get("per_conn_kb") for r in rows if r["row"] == "baseline"}
        for r in rows:
            if r["row"] != "baseline" and "per_conn_kb" in r:
                r["x_baseline"] = ratio(r["per_conn_kb"], base.get(r["connections"]))
                r["queued_x_baseline"] = ratio(r.get("per_queued_kb"), base.get(r["connections"]))
        return {
            "rows": rows,
            "targets": {
                "anygle x_baseline per connection": "<= 1.2",
                "20k connections": "no errors",
            },
        }

    # --- scale-out -----------------------------------------------------------------------------
    def scaleout_row(self, n: int, engine: str) -> dict[str, Any]:
        r = procs.redis() if engine == "redis" else None
        servers: list[procs.Server] = []
        ng = None
        try:
            for i in range(n):
                servers.append(
                    procs.anygle(
                        engine,
                        redis_url=f"redis://127.0.0.1:{r.port}/0" if r else None,
                        instance=f"bench-{i}",
                        extra=self.args.server_arg,
                    )
                )
            ng = procs.nginx(
                servers,
                sticky_pairs=engine == "memory",
                conns=self.args.scaleout_pairs * 2 + 64,
            )
            extra = [ng] + ([r] if r else [])
            out = self.relay_row(
                f"{n}-instance",
                [*servers, *extra],
                [("127.0.0.1", ng.port)],
                "anygle",
                self.args.redis_queue if r else "unmoderated",
                pairs=self.args.scaleout_pairs,
            )
            out["engine"] = engine
            out["instances"] = n
            out["per_instance_cpu_pct"] = None
            return out
        except Exception as e:
            logs = "\n".join(f"--- {s.name}\n{procs.tail(s.log, 8)}" for s in servers)
            raise RuntimeError(f"{e}\n{logs}") from None
        finally:
            for s in servers:
                s.stop()
            if ng:
                ng.stop()
            if r:
                r.stop()

    def scenario_overload(self) -> dict[str, Any]:
        return overload.scenario_overload(self)

    def scenario_scaleout(self) -> dict[str, Any]:
        if self.args.no_nginx or not shutil_which("nginx"):
            return {
                "rows": [],
                "error": "not run: nginx missing or --no-nginx (apt-get install -y nginx)",
            }
        ok, why = self.redis_available()
        engines = {
            "auto": ["redis", "memory"],
            "redis": ["redis"],
            "memory": ["memory"],
            "both": ["redis", "memory"],
        }[self.args.scaleout_engine]
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        skipped = []
        for engine in engines:
            if engine == "redis" and not ok:
                skipped.append({"row": "redis", "error": f"not run: {why}"})
                continue
            for n in (1, 2):
                plan.append((f"{engine} x{n}", lambda n=n, e=engine: self.scaleout_row(n, e)))
        rows = self.repeated("scaleout", plan) + skipped
        for r in rows:
            one = next((o for o in rows if o["row"] == r["row"][:-1] + "1"), None)
            r["x_one_instance"] = self.paired_ratio(r, one)
        return {
            "rows": rows,
            "pairs": self.args.scaleout_pairs,
            "note": "redis: nginx round-robin, a pair's sockets may land on different "
            "instances (as strangers do); memory: instances share nothing, nginx "
            "hashes the pair key so both sockets of a pair reach the same instance",
        }


class CpuWindow:
    """CPU used between construction and ``stop()``: servers, load workers, everything else."""

    def __init__(self, servers: list[procs.Server], workers: procs.Workers) -> None:
        self.servers, self.workers = servers, workers
        self.t0, self.s0, self.c0 = time.monotonic(), self._servers(), workers.cpu()
        self.m0, self.h0 = busy_cpu(), self_cpu()

    def _servers(self) -> float:
        total = 0.0
        for s in self.servers:
            with contextlib.suppress(psutil.Error):
                total += s.cpu()
        return total

    def stop(self) -> dict[str, float]:
        secs = max(time.monotonic() - self.t0, 1e-6)
        ds, dc = self._servers() - self.s0, self.workers.cpu() - self.c0
        dm, dh = busy_cpu() - self.m0, self_cpu() - self.h0
        return {
            "server_cpu_pct": round(100 * ds / secs, 1),
            "client_cpu_pct": round(100 * dc / secs, 1),
            "other_cpu_pct": round(100 * (dm - ds - dc - dh) / secs, 1),
        }


def cpu_ratio(row: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    """Throughput per server CPU second relative to ``ref`` (the median over rounds of
    ref µs/msg ÷ row µs/msg): what the ratio would be if both servers had a core to themselves,
    far less sensitive to other load on the machine than the rate."""
    if not ref:
        return None
    pairs = [
        b / a
        for a, b in zip(row.get("us_by_round") or [], ref.get("us_by_round") or [], strict=False)
        if a and b
    ]
    return round(statistics.median(pairs), 3) if pairs else None


NOISY = 25.0  # % of a core used by other processes during a run: the run counts as disturbed


def disturbed(r: dict[str, Any]) -> bool:
    return (r.get("other_cpu_pct") or 0.0) > NOISY


def busy_cpu() -> float:
    """Seconds of CPU the machine's processes spent (all cores; not idle, I/O wait, interrupts
    — loopback traffic is partly handled there — nor time stolen by the hypervisor)."""
    t = psutil.cpu_times()
    skip = ("idle", "iowait", "irq", "softirq", "steal", "guest", "guest_nice")
    return sum(getattr(t, f) for f in t._fields if f not in skip)


def steal_cpu() -> float:
    return getattr(psutil.cpu_times(), "steal", 0.0)


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )


# --- machine, table, JSON, plot -------------------------------------------------------------
def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "mem_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), ""
            )
    for mod in ("twisted", "autobahn", "msgpack"):
        with contextlib.suppress(Exception):
            info[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    with contextlib.suppress(Exception):
        info["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=procs.REPO,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    return info


def _dirty() -> list[str]:
    """Uncommitted changes under anygle/ (the numbers are then for code that is in no commit)."""
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "status", "--porcelain", "anygle", "twisted"],
            cwd=procs.REPO,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return [ln[3:] for ln in out.splitlines()]
    return []


def fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and spec:
        return format(v, spec)
    return str(v)


def table(results: dict[str, Any]) -> str:
    """The results as Markdown tables (also what goes into docs/performance.md)."""
    out: list[str] = []
    rel = results.get("relay")
    if rel:
        out += [
            f"**Relay throughput** ({rel['pairs']} pairs, window {rel['window']}, 60-byte "
            f"messages, {rel['duration_s']:g} s measured"
            + (
                f"; msgs/s: the median of {rel['repeat']} interleaved runs, ratios: the median "
                "of the ratios within each run"
                if rel["repeat"] > 1
                else ""
            )
            + ")",
            "",
            "| row | msgs/s | x baseline | x same-instance | server µs/msg "
            "| x baseline per CPU | server CPU % | client CPU % | other CPU % | runs, k msgs/s "
            "| notes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in rel["rows"]:
            note = _note(r)
            out.append(
                f"| {r['row']} | {fmt(r.get('rate'), ',.0f')} | "
                f"{fmt(r.get('x_baseline'), '.2f')} | "
                f"{fmt(r.get('x_same_instance'), '.2f')} | {fmt(r.get('server_us_per_msg'))} | "
                f"{fmt(r.get('x_baseline_per_cpu'), '.2f')} | "
                f"{fmt(r.get('server_cpu_pct'))} | {fmt(r.get('client_cpu_pct'))} | "
                f"{fmt(r.get('other_cpu_pct'))} | {spread(r)} | {note} |"
            )
        out.append("")
    lat = results.get("latency")
    if lat:
        out += [
            f"**Match latency** (joins at {lat['rate']:g}/s into one queue for "
            f"{lat['seconds']:g} s; client-observed join → matched, ms)",
            "",
            "| engine | matched | median | p95 | p99 | max | joiner median | joiner p99 "
            "| other CPU % | notes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in lat["rows"]:
            note = _note(r)
            out.append(
                f"| {r['row']} | {fmt(r.get('matched'))}/{fmt(r.get('joins'))} | "
                f"{fmt(r.get('p50_ms'))} | {fmt(r.get('p95_ms'))} | "
                f"{fmt(r.get('p99_ms'))} | {fmt(r.get('max_ms'))} | "
                f"{fmt(r.get('joiner_p50_ms'))} | {fmt(r.get('joiner_p99_ms'))} | "
                f"{fmt(r.get('other_cpu_pct'))} | {note} |"
            )
        out.append("")
    mem = results.get("memory")
    if mem:
        out += [
            "**Memory** (server RSS growth; idle = connected, queued = waiting in a queue)",
            "",
            "| server | connections | connected | KB/connection | x baseline "
            "| KB/queued user | x baseline | max ping RTT idle / queued, ms | notes |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in mem["rows"]:
            note = _note(r)
            out.append(
                f"| {r['row']} | {fmt(r.get('connections'))} | {fmt(r.get('connected'))} "
                f"| {fmt(r.get('per_conn_kb'))} | {fmt(r.get('x_baseline'), '.2f')} | "
                f"{fmt(r.get('per_queued_kb'))} | "
                f"{fmt(r.get('queued_x_baseline'), '.2f')} | "
                f"{fmt((r.get('stall_idle') or {}).get('max_ms'))} / "
                f"{fmt((r.get('stall_queued') or {}).get('max_ms'))} | {note} |"
            )
        out.append("")
    sc = results.get("scaleout")
    if sc:
        out += [
            f"**Scale-out behind nginx** ({sc.get('pairs')} pairs; {sc.get('note', '')})",
            "",
            "| instances | msgs/s | x 1 instance | servers+nginx CPU % | client CPU % "
            "| other CPU % | runs, k msgs/s | notes |",
            "|---|---:|---:|---:|---:|---:|---|---|",
        ]
        if sc.get("error"):
            out.append(f"| - | - | - | - | - | - | - | {sc['error']} |")
        for r in sc.get("rows", []):
            note = _note(r)
            out.append(
                f"| {r['row']} | {fmt(r.get('rate'), ',.0f')} | "
                f"{fmt(r.get('x_one_instance'), '.2f')} | {fmt(r.get('server_cpu_pct'))} "
                f"| {fmt(r.get('client_cpu_pct'))} | {fmt(r.get('other_cpu_pct'))} "
                f"| {spread(r)} | {note} |"
            )
        out.append("")
    ov = results.get("overload")
    if ov:
        out += overload.table(ov, fmt, _note)
    notes = list(results.get("notes") or [])
    if (results.get("limits") or {}).get("note"):
        notes.insert(0, results["limits"]["note"])
    if notes:
        out += ["Notes:", *(f"- {n}" for n in notes), ""]
    return "\n".join(out)


def spread(r: dict[str, Any]) -> str:
    rates = r.get("rates_by_round") or []
    if len(rates) < 2:
        return ""
    return " / ".join("fail" if x is None else f"{x / 1000:.1f}" for x in rates)


def _note(r: dict[str, Any]) -> str:
    """A row's notes column: the first line of its error, else what went wrong or disturbed it."""
    return r["error"].splitlines()[0][:90] if r.get("error") else _errs(r)


def _errs(r: dict[str, Any]) -> str:
    bits = []
    if r.get("errors"):
        bits.append("errors: " + ", ".join(f"{k}x{v}" for k, v in r["errors"].items()))
    if r.get("disturbed"):
        bits.append(r["disturbed"])
    elif disturbed(r):
        bits.append("disturbed: other processes were busy")
    for k in ("failed", "closed", "mispaired"):
        if r.get(k):
            bits.append(f"{k} {r[k]}")
    if r.get("opened") and r.get("connections") and r["opened"] < r["connections"]:
        bits.append(f"capped to {r['opened']} by the file limit")
    if r.get("server_alive") is False:
        bits.append("SERVER DIED")
    if r.get("matched_pairs") is not None and r.get("pairs") and r["matched_pairs"] < r["pairs"]:
        bits.append(f"only {r['matched_pairs']}/{r['pairs']} pairs matched")
    return "; ".join(bits)


def plot(results: dict[str, Any], path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=80)
    for r in (results.get("latency") or {}).get("rows", []):
        if r.get("samples"):
            xs = r["samples"]
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax1.plot(xs, ys, label=f"{r['row']} (p50 {r['p50_ms']}, p99 {r['p99_ms']} ms)")
    if ax1.lines:
        ax1.set_xscale("log")
        ax1.legend(fontsize=8)
    else:
        ax1.text(0.5, 0.5, "latency not measured", ha="center", transform=ax1.transAxes)
    ax1.set_xlabel("join → matched, ms (client-observed, log)")
    ax1.set_ylabel("fraction of users")
    ax1.set_title("Match latency (CDF)")
    ax1.grid(True, alpha=0.3)
    names, rates = [], []
    for r in (results.get("relay") or {}).get("rows", []):
        names.append(r["row"])
        rates.append(r.get("rate") or 0)
    for r in (results.get("scaleout") or {}).get("rows", []):
        names.append(f"nginx {r['row']}")
        rates.append(r.get("rate") or 0)
    colors = ["#777" if n == "baseline" else "#3a7" for n in names]
    ax2.bar(range(len(names)), rates, color=colors)
    ax2.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("delivered msgs/s")
    ax2.set_title("Relay throughput (grey: bare relay)")
    for i, v in enumerate(rates):
        ax2.text(i, v, f"{v:,.0f}" if v else "n/a", ha="center", va="bottom", fontsize=7)
    fig.suptitle(
        f"Anygle bench {results['date']} ({results['machine'].get('cpus')} cores)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# --- CLI ------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "scenarios",
        nargs="*",
        metavar="SCENARIO",
        help=f"any of {', '.join(SCENARIOS + EXTRA_SCENARIOS)} (default: all but overload)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny numbers for a smoke run (< 2 min; memory engine and baseline only "
        "unless --redis/--nginx are given)",
    )
    p.add_argument("--name", default=None, help="results file name prefix (default: full/quick)")
    p.add_argument("--out", default=RESULTS, help="results directory")
    p.add_argument("--workers", type=int, default=2, help="load worker processes")
    p.add_argument("--pairs", type=int, default=200)
    p.add_argument("--window", type=int, default=8, help="messages in flight per pair")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per row")
    p.add_argument(
        "--repeat", type=int, default=3, help="relay/scale-out rounds (the median is reported)"
    )
    p.add_argument("--rate", type=float, default=500.0, help="joins/s for the latency scenario")
    p.add_argument("--latency-seconds", type=float, default=8.0)
    p.add_argument("--latency-queue", default="unmoderated")
    p.add_argument(
        "--no-latency-quiet",
        dest="latency_quiet",
        action="store_false",
        help="skip the latency rows with the periodic stats/searching pushes turned off",
    )
    p.add_argument(
        "--redis-queue",
        default="unmoderated",
        help="queue type of the Redis relay and scale-out rows",
    )
    p.add_argument(
        "--memory-levels", default="10000,20000", type=lambda s: [int(x) for x in s.split(",") if x]
    )
    p.add_argument("--scaleout-pairs", type=int, default=None)
    p.add_argument(
        "--scaleout-engine",
        choices=("auto", "both", "redis", "memory"),
        default="auto",
        help="auto: redis (when it runs) and memory",
    )
    p.add_argument(
        "--per-source",
        type=int,
        default=10000,
        help="connections per source address 127.0.0.N (ephemeral ports: ~28k each)",
    )
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight per worker")
    p.add_argument(
        "--probe-seconds",
        type=float,
        default=7.0,
        help="memory scenario: ping round trips measured per phase (reactor stalls; 0: off)",
    )
    p.add_argument(
        "--rows",
        default=None,
        type=lambda v: [x for x in v.split(",") if x],
        help="relay rows to run (default all): baseline,memory-off,memory-on,redis-same,"
        "redis-cross",
    )
    p.add_argument(
        "--overload-engines",
        default=["memory", "redis"],
        type=lambda v: [x for x in v.split(",") if x],
        help="overload: engines to run (memory,redis)",
    )
    p.add_argument("--overload-pairs", type=int, default=100, help="overload: chatting pairs")
    p.add_argument("--overload-seconds", type=float, default=60.0, help="overload: seconds")
    p.add_argument(
        "--overload-factor", type=float, default=2.0, help="overload: x the measured capacity"
    )
    p.add_argument(
        "--overload-inflight",
        type=int,
        default=500,
        help="overload: unanswered messages per direction at most",
    )
    p.add_argument(
        "--overload-drain", type=float, default=30.0, help="overload: s to wait for the rest"
    )
    p.add_argument(
        "--overload-flooders", type=int, default=10, help="overload: malformed-frame flooders"
    )
    p.add_argument(
        "--overload-capacity-seconds",
        type=float,
        default=5.0,
        help="overload: seconds of the capacity measurement before each engine",
    )
    p.add_argument(
        "--storm-connections",
        type=int,
        default=5000,
        help="overload: simultaneous connects of the connect storm (0: no storm)",
    )
    p.add_argument("--no-redis", action="store_true")
    p.add_argument("--no-nginx", action="store_true")
    p.add_argument("--redis", action="store_true", help="with --quick: run the Redis rows too")
    p.add_argument("--nginx", action="store_true", help="with --quick: run scale-out too")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--profile",
        metavar="DIR",
        default=None,
        help="run anygle instances under cProfile, stats files into DIR "
        "(read them with python -m pstats)",
    )
    p.add_argument(
        "--rev",
        default=None,
        help="run anygle from this git revision (exported to a temp dir) instead of "
        "the work tree, e.g. --rev HEAD while others edit the tree",
    )
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for every anygle instance (repeatable), e.g. "
        "--server-arg=--stats-interval=3600",
    )
    a = p.parse_args(argv)
    a.scenarios = list(a.scenarios) or list(SCENARIOS)
    known = SCENARIOS + EXTRA_SCENARIOS
    unknown = sorted(set(a.scenarios) - set(known))
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if a.quick and a.scenarios == ["overload"]:
        # the overload scenario's point is both engines: --quick only makes it shorter
        if a.overload_seconds == p.get_default("overload_seconds"):
            a.overload_seconds = 10.0
        a.overload_capacity_seconds, a.warmup, a.overload_drain = 2.0, 1.0, 20.0
        a.repeat = 1
    elif a.quick:
        a.pairs, a.window, a.warmup, a.duration = 20, 4, 0.5, 2.0
        a.rate, a.latency_seconds, a.memory_levels = 200.0, 1.0, [200]
        a.probe_seconds = min(a.probe_seconds, 0.5)
        a.latency_quiet = False
        a.no_redis = a.no_redis or not a.redis
        a.no_nginx = a.no_nginx or not a.nginx
        a.workers = min(a.workers, 2)
        a.repeat = 1
    if a.scaleout_pairs is None:
        a.scaleout_pairs = a.pairs
    default_name = "overload" if a.scenarios == ["overload"] else "full"
    a.name = a.name or (
        f"{default_name}-quick"
        if a.quick and default_name != "full"
        else "quick"
        if a.quick
        else default_name
    )
    return a


COMPARED = {
    "relay": ("x_baseline", "x_baseline_per_cpu", "x_same_instance", "server_us_per_msg", "rate"),
    "latency": ("p50_ms", "p99_ms", "joiner_p50_ms", "joiner_p99_ms"),
    "memory": ("per_conn_kb", "x_baseline", "per_queued_kb"),
    "scaleout": ("x_one_instance", "rate"),
}


def compare(paths: list[str], out: Any = sys.stdout) -> int:
    """``python -m bench compare BEFORE.json AFTER.json``: the ratios of two runs side by side
    (judge a hot-path change by the ratios each run measured against its own baseline)."""
    if len(paths) != 2:
        sys.stderr.write("usage: python -m bench compare BEFORE.json AFTER.json\n")
        return 2
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    before, after = runs
    out.write(
        f"before: {paths[0]} ({before.get('date')}, {(before.get('server') or {}).get('commit')})\n"
        f"after:  {paths[1]} ({after.get('date')}, {(after.get('server') or {}).get('commit')})\n\n"
        "| scenario | row | metric | before | after | after/before |\n"
        "|---|---|---|---:|---:|---:|\n"
    )
    for scenario, metrics in COMPARED.items():
        rows_a = {_key(r): r for r in (before.get(scenario) or {}).get("rows", [])}
        for r in (after.get(scenario) or {}).get("rows", []):
            a = rows_a.get(_key(r))
            if a is None:
                continue
            for m in metrics:
                va, vb = a.get(m), r.get(m)
                if va is None and vb is None:
                    continue
                change = f"{vb / va:.2f}" if va and vb else "-"
                out.write(f"| {scenario} | {_key(r)} | {m} | {fmt(va)} | {fmt(vb)} | {change} |\n")
    return 0


def _key(r: dict[str, Any]) -> str:
    return f"{r['row']} {r['connections']}" if "connections" in r else r["row"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return compare(argv[1:])
    args = parse_args(argv)
    procs.install_cleanup()
    progress = Progress()
    # the server process holds every connection of a scenario; the workers share them out
    need = max(args.pairs * 2, args.scaleout_pairs * 2) + 1024
    if "memory" in args.scenarios:
        need = max(need, *(n + 1024 for n in args.memory_levels))
    if "overload" in args.scenarios:
        need = max(need, args.storm_connections + 1024, args.overload_pairs * 2 + 1024)
    nofile, note = procs.raise_nofile(need)
    if note:
        progress.say(f"warning: {note}")
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "name": args.name,
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "limits": {"nofile": nofile, "nofile_wanted": need, "note": note},
        "config": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "targets": TARGETS,
    }
    bench = Bench(args, progress)
    bench.nofile = nofile
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        procs.profile_dir = os.path.abspath(args.profile)
        results["profile_dir"] = procs.profile_dir
        progress.say("profiling every anygle instance: numbers are slower than real")
    if args.rev:
        procs.server_tree, commit = procs.export_tree(args.rev)
        results["server"] = {"rev": args.rev, "commit": commit, "tree": "exported"}
    else:
        results["server"] = {
            "tree": "work tree",
            "commit": results["machine"].get("git"),
            "dirty": _dirty(),
        }
    results["server"]["args"] = procs.limit_args(procs.server_tree) + args.server_arg
    os.makedirs(args.out, exist_ok=True)
    # One file per run name, replaced by the next run (the date is inside): the repository keeps
    # the latest results, and git keeps the history.
    path = os.path.join(args.out, f"{args.name}.json")
    try:
        for name in SCENARIOS + EXTRA_SCENARIOS:
            if name in args.scenarios:
                progress.say(f"== {name}")
                results[name] = getattr(bench, f"scenario_{name}")()
                with open(path + ".tmp", "w") as f:  # partial results survive an interruption
                    json.dump(results, f, indent=1)
    except KeyboardInterrupt:
        progress.say("interrupted: writing what was measured")
        results["interrupted"] = True
    finally:
        procs.kill_all()
    results["notes"] = bench.notes
    results["seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    with contextlib.suppress(OSError):
        os.remove(path + ".tmp")
    png = None if args.no_plot else plot(results, path[:-5] + ".png")
    text = table(results)
    sys.stdout.write("\n" + text + "\n")
    sys.stdout.write(
        f"machine: {results['machine'].get('cpus')} cores, "
        f"{results['machine'].get('cpu', '?')}; {results['date']}; "
        f"{results['seconds']} s\nJSON: {path}\n" + (f"PNG: {png}\n" if png else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
