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
``churn``     (only when named) rounds of connections that come and go: what they leave behind.
``heap``      (only when named) the Python heap per idle connection and queued user
              (tracemalloc), anygle vs the bare relay, and the lines that allocated it.

Every server, Redis, nginx and each load worker is its own process; all are killed at the end.
Results: a table on stdout, JSON (and a PNG) in ``bench/results/<name>.*`` (the latest run).
``python -m bench compare BEFORE.json AFTER.json`` puts the ratios of two runs side by side.
These are measurements, not tests: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Callable
from typing import Any

if __package__ in (None, ""):  # ``python bench/run.py``: make ``bench`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import (
    chatlines,
    churn,
    heap,
    latency,
    memory,
    overload,
    procs,
    record,
    relay,
    scaleout,
)
from bench.compare import compare
from bench.filelimit import raise_nofile
from bench.plot import plot
from bench.suite import Bench, Progress
from bench.tables import table

RESULTS = os.path.join(procs.REPO, "bench", "results")
RUNS: dict[str, Callable[[Bench], dict[str, Any]]] = {  # in the order they run
    "relay": relay.scenario,
    "latency": latency.scenario,
    "memory": memory.scenario,
    "scaleout": scaleout.scenario,
    "overload": overload.scenario,
    "churn": churn.scenario,
    "heap": heap.scenario,
}
EXTRA_SCENARIOS = ("overload", "churn", "heap")  # run only when named
SCENARIOS = tuple(name for name in RUNS if name not in EXTRA_SCENARIOS)

TARGETS = {
    "memory-on/baseline": 0.6,
    "cross/same": 0.5,
    "latency_p50_ms": 5.0,
    "latency_p99_ms": 25.0,
    "rss_per_conn/baseline": 1.2,
}


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
        help="relay rows to run (default all): baseline,memory-off,memory-on,baseline-teen,"
        "teen,baseline-adult,adult-off,adult-on,redis-same,redis-cross",
    )
    p.add_argument(
        "--chat-messages",
        type=int,
        default=50,
        help="varied rows: messages per chat, then the pair skips to a new chat (0: never)",
    )
    p.add_argument(
        "--lines",
        default=str(chatlines.LINES),
        help="the varied chat lines of the teen/adult relay rows (queue<TAB>text)",
    )
    overload.add_options(p)
    churn.add_options(p)
    heap.add_options(p)
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
        a.heap_connections = min(a.heap_connections, 200)
        a.probe_seconds = min(a.probe_seconds, 0.5)
        a.latency_quiet = False
        a.no_redis = a.no_redis or not a.redis
        a.no_nginx = a.no_nginx or not a.nginx
        a.workers = min(a.workers, 2)
        a.repeat = 1
    if a.scaleout_pairs is None:
        a.scaleout_pairs = a.pairs
    default_name = a.scenarios[0] if a.scenarios in (["overload"], ["churn"], ["heap"]) else "full"
    a.name = a.name or (
        f"{default_name}-quick"
        if a.quick and default_name != "full"
        else "quick"
        if a.quick
        else default_name
    )
    return a


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
    if "heap" in args.scenarios:
        need = max(need, args.heap_connections + 1024)
    if "overload" in args.scenarios:
        need = max(need, args.storm_connections + 1024, args.overload_pairs * 2 + 1024)
    nofile, note = raise_nofile(need)
    if note:
        progress.say(f"warning: {note}")
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "name": args.name,
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": record.machine(),
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
            "dirty": record.dirty(),
        }
    results["server"]["args"] = procs.limit_args(procs.server_tree) + args.server_arg
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{args.name}.json")
    try:
        for name in RUNS:
            if name in args.scenarios:
                progress.say(f"== {name}")
                results[name] = RUNS[name](bench)
                record.save(results, path, partial=True)
    except KeyboardInterrupt:
        progress.say("interrupted: writing what was measured")
        results["interrupted"] = True
    finally:
        procs.kill_all()
    results["notes"] = bench.notes
    results["seconds"] = round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1)
    record.save(results, path)
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
