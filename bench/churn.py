"""The churn scenario: what connections that came and went leave behind in the server.

Rounds of ``--churn-connections`` connections (pairs): connect, join, get matched, exchange a few
chat messages, skip, close: with a close frame, as a browser tab that is closed does, or with
``--churn-drop`` dropped without one, as by a phone that lost its network (the server keeps
such a session for a resume during ``--resume-grace``, so RSS grows for that long before it
levels off).  The server's RSS is read after every round, once the round's connections are
gone; a server that frees what a closed connection held grows by little after the first rounds
(the allocator keeps its high-water mark, so RSS never shrinks), one that keeps closed
connections for a while grows round after round.  The first round is the reference (start-up
heap reused), growth is counted from it.
"""

from __future__ import annotations

import time
from typing import Any

from bench import procs
from bench.suite import Bench

MESSAGES = 10  # per chat, both directions (5 each)


def add_options(p: Any) -> None:
    p.add_argument("--churn-rounds", type=int, default=40, help="churn scenario: rounds")
    p.add_argument(
        "--churn-connections", type=int, default=1000, help="churn scenario: connections a round"
    )
    p.add_argument(
        "--churn-drop",
        action="store_true",
        help="churn scenario: drop the connections (TCP reset) instead of closing them",
    )


def one_round(bench: Bench, server: procs.Server, k: int) -> dict[str, Any]:
    a = bench.args
    label = f"churn round {k + 1}/{a.churn_rounds}"
    jobs = bench.jobs(
        "relay",
        a.churn_connections,
        protocol="anygle",
        targets=[("127.0.0.1", server.port)],
        tag=f"c{k}",
        queue="unmoderated",
        pairs=True,
        chat_messages=MESSAGES,
    )
    for job in jobs:
        job["one_chat"] = True  # skip after the chat, and join no more
    workers = procs.Workers(jobs, bench.progress)
    t0 = time.monotonic()
    try:
        workers.wait("started", 20, label)
        workers.wait("ready", 60 + a.churn_connections / 50, f"{label} setup")
        workers.broadcast({"cmd": "go", "warmup": 0.0, "duration": 0.5, "window": 2})
        workers.wait("result", 30, label)
        totals = workers.totals()
    finally:
        # closes (or drops) what is still open and waits for the load processes to exit
        workers.close(clean=not a.churn_drop)
    time.sleep(0.3)  # the server handles the closes
    return {
        "round": k + 1,
        "rss_mb": round(server.rss() / 2**20, 1),
        "delivered": totals.get("delivered", 0),
        "matched": totals.get("matched", 0),
        "seconds": round(time.monotonic() - t0, 2),
    }


def scenario(bench: Bench) -> dict[str, Any]:
    a = bench.args
    rounds: list[dict[str, Any]] = []
    with procs.group() as servers:
        servers.append(s := procs.anygle("memory", extra=a.server_arg))
        start_mb = round(s.rss() / 2**20, 1)
        for k in range(a.churn_rounds):
            r = one_round(bench, s, k)
            rounds.append(r)
            grown = r["rss_mb"] - rounds[0]["rss_mb"]
            bench.progress.say(
                f"churn round {k + 1}/{a.churn_rounds}: RSS {r['rss_mb']} MB "
                f"(+{grown:.1f} since round 1), {r['delivered']} messages, {r['seconds']} s"
            )
        died = procs.died(servers)
    grown = rounds[-1]["rss_mb"] - rounds[0]["rss_mb"] if rounds else None
    row = {
        "row": "anygle-memory",
        "rounds": len(rounds),
        "connections_per_round": a.churn_connections,
        "close": "dropped" if a.churn_drop else "close frame",
        "start_mb": start_mb,
        "first_round_mb": rounds[0]["rss_mb"] if rounds else None,
        "last_round_mb": rounds[-1]["rss_mb"] if rounds else None,
        "growth_mb": round(grown, 1) if grown is not None else None,
        "growth_kb_per_connection": (
            round(grown * 1024 / (a.churn_connections * max(1, len(rounds) - 1)), 3)
            if grown is not None
            else None
        ),
        **died,
    }
    return {"rows": [row], "rounds": rounds, "messages_per_chat": MESSAGES}
