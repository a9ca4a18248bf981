"""``python -m bench compare BEFORE.json AFTER.json``: the figures of two runs side by side.

Judge a hot-path change by the ratios each run measured against its own baseline: on a shared
machine the ratios move much less than the rates.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.tables import fmt

COMPARED = {
    "relay": ("x_baseline", "x_baseline_per_cpu", "x_same_instance", "server_us_per_msg", "rate"),
    "latency": ("p50_ms", "p99_ms", "joiner_p50_ms", "joiner_p99_ms"),
    "memory": ("per_conn_kb", "x_baseline", "per_queued_kb"),
    "scaleout": ("x_one_instance", "rate"),
}


def compare(paths: list[str], out: Any = sys.stdout) -> int:
    """The :data:`COMPARED` metrics of the rows both runs have, as a Markdown table."""
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
