"""The arithmetic of a measurement: percentiles, ratios, and where the CPU went during a window.

The machine is shared (two cores, other helpers' jobs), so every row reports the CPU of the
servers, of the load workers and of everything else in the same window: a reader can then tell a
slow server from a busy machine.  Kept apart from the scenarios so that each of them uses one
accounting.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterable
from typing import Any

import psutil

from bench import procs

NOISY = 25.0  # % of a core used by other processes during a run: the run counts as disturbed


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return round(s[lo] + (s[hi] - s[lo]) * (k - lo), 3)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def added_up(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Counts by key (error codes) of several load workers, summed."""
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


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


def servers_cpu(servers: list[procs.Server]) -> dict[str, float]:
    """CPU seconds used so far by each server still there, by name."""
    out: dict[str, float] = {}
    for s in servers:
        with contextlib.suppress(psutil.Error):
            out[s.name] = s.cpu()
    return out


class CpuWindow:
    """CPU used between construction and ``stop()``: servers, load workers, everything else.

    After ``stop()`` the window also holds its length (``seconds``), the servers' CPU seconds
    (``server_seconds``), each server's share (``by_process``, % of a core) and the time the
    hypervisor stole (``steal_pct``)."""

    def __init__(self, servers: list[procs.Server], workers: procs.Workers) -> None:
        self.servers, self.workers = servers, workers
        self.s0, self.c0, self.t0 = servers_cpu(servers), workers.cpu(), time.monotonic()
        self.m0, self.h0, self.st0 = busy_cpu(), self_cpu(), steal_cpu()
        self.seconds = self.server_seconds = self.steal_pct = 0.0
        self.by_process: dict[str, float] = {}

    def stop(self) -> dict[str, float]:
        s1, c1, t1 = servers_cpu(self.servers), self.workers.cpu(), time.monotonic()
        m1, h1, st1 = busy_cpu(), self_cpu(), steal_cpu()
        secs = self.seconds = max(t1 - self.t0, 1e-6)
        ds = self.server_seconds = sum(s1.values()) - sum(self.s0.values())
        dc, dm, dh = c1 - self.c0, m1 - self.m0, h1 - self.h0
        self.by_process = {k: round(100 * (v - self.s0.get(k, 0)) / secs, 1) for k, v in s1.items()}
        self.steal_pct = round(100 * (st1 - self.st0) / secs, 1)
        return {
            "server_cpu_pct": round(100 * ds / secs, 1),
            "client_cpu_pct": round(100 * dc / secs, 1),
            # everything else on the (shared) machine in the same window: a noise indicator
            "other_cpu_pct": round(100 * (dm - ds - dc - dh) / secs, 1),
        }


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
