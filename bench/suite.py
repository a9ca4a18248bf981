"""What every scenario shares: the run's options, the status line, load jobs, rounds of rows.

A scenario (``bench/relay.py``, ``latency.py``, ``memory.py``, ``scaleout.py``, ``overload.py``)
is a function of a :class:`Bench` that returns its part of the results; a row that fails is
reported in its place and the suite goes on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.measure import disturbed

CONTENT = "hey there! how is your day going? i am bored, want to chat ?"  # 60 bytes, benign
assert len(CONTENT.encode()) == 60

Row = dict[str, Any]
Plan = list[tuple[str, Callable[[], Row]]]


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


def which(name: str) -> str | None:
    """A tool on PATH or in the sbin/bin directories a non-login shell leaves out."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )


class Bench:
    """One run of the suite: its options, status line, notes for the table and load sources."""

    def __init__(self, args: argparse.Namespace, progress: Progress) -> None:
        self.args = args
        self.progress = progress
        self.run_id = dt.datetime.now(dt.UTC).strftime("%H%M%S")
        self.next_source = 2  # 127.0.0.2, 127.0.0.3, ...
        self.notes: list[str] = []
        self.nofile = 1 << 20

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
        texts: list[str] | None = None,
        age: str = "adult",
        chat_messages: int = 0,
    ) -> list[dict[str, Any]]:
        """Split ``total`` connections over the workers (whole pairs when ``pairs``);
        ``texts``: varied chat lines to send (``bench/chatlines.py``) instead of one line."""
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
                    "texts": texts,
                    "age": age,
                    "chat_messages": chat_messages,
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
        if not os.path.exists("/usr/bin/redis-server") and not which("redis-server"):
            return False, "redis-server is not installed (apt-get install redis-server)"
        return True, ""

    def run_row(self, label: str, fn: Callable[[], Row], row: str) -> Row:
        try:
            return fn()
        except Exception as e:  # a failing row is reported, the suite goes on
            self.progress.say(f"{label}: FAILED: {e}")
            return {"row": row, "error": f"{type(e).__name__}: {e}"[:3000]}

    def repeated(self, label: str, plan: Plan) -> list[Row]:
        """Run the rows of ``plan`` ``--repeat`` times, interleaved (so that drift on a noisy
        machine hits every row alike); each row reports the median rate of its good runs."""
        runs: dict[str, list[Row]] = {}
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
