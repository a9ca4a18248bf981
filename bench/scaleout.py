"""The scale-out scenario: relay throughput through nginx (the shipped config) to 1 and 2 anygle
instances.  Redis: nginx round-robin, so a pair's sockets may land on different instances (as
strangers do); memory: the instances share nothing, so nginx hashes the pair key and both sockets
of a pair reach the same instance.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from bench import procs
from bench.measure import paired_ratio
from bench.relay import relay_row
from bench.suite import Bench, Plan, Row, which

ENGINES = {
    "auto": ["redis", "memory"],
    "redis": ["redis"],
    "memory": ["memory"],
    "both": ["redis", "memory"],
}


def scaleout_row(bench: Bench, n: int, engine: str) -> Row:
    with procs.group() as servers:
        if engine == "redis":
            servers.append(r := procs.redis())
            url: str | None = f"redis://127.0.0.1:{r.port}/0"
        else:
            url = None
        instances = []
        for i in range(n):
            instances.append(
                procs.anygle(
                    engine, redis_url=url, instance=f"bench-{i}", extra=bench.args.server_arg
                )
            )
            servers.append(instances[-1])
        conns = bench.args.scaleout_pairs * 2 + 64
        servers.append(ng := procs.nginx(instances, sticky_pairs=engine == "memory", conns=conns))
        out = relay_row(
            bench,
            f"{n}-instance",
            servers,
            [("127.0.0.1", ng.port)],
            "anygle",
            bench.args.redis_queue if url else "unmoderated",
            pairs=bench.args.scaleout_pairs,
        )
        out["engine"] = engine
        out["instances"] = n
        out["per_instance_cpu_pct"] = None
        return out


def scenario(bench: Bench) -> dict[str, Any]:
    if bench.args.no_nginx or not which("nginx"):
        return {
            "rows": [],
            "error": "not run: nginx missing or --no-nginx (apt-get install -y nginx)",
        }
    ok, why = bench.redis_available()
    plan: Plan = []
    skipped = []
    for engine in ENGINES[bench.args.scaleout_engine]:
        if engine == "redis" and not ok:
            skipped.append({"row": "redis", "error": f"not run: {why}"})
            continue
        for n in (1, 2):
            plan.append((f"{engine} x{n}", partial(scaleout_row, bench, n, engine)))
    rows = bench.repeated("scaleout", plan) + skipped
    for r in rows:
        one = next((o for o in rows if o["row"] == r["row"][:-1] + "1"), None)
        r["x_one_instance"] = paired_ratio(r, one)
    return {
        "rows": rows,
        "pairs": bench.args.scaleout_pairs,
        "note": "redis: nginx round-robin, a pair's sockets may land on different "
        "instances (as strangers do); memory: instances share nothing, nginx "
        "hashes the pair key so both sockets of a pair reach the same instance",
    }
