"""The results as Markdown tables: what the run prints, and what goes into docs/performance.md.

Each table is a heading and the row fields of its columns; one :func:`grid` draws them all.  A
field is a key of the rows or one of the computed cells (:data:`CELLS`); :data:`COLUMNS` gives it
its title and number format wherever it appears.  Columns are right-aligned but for the first and
the text ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.measure import disturbed

Row = dict[str, Any]
Cell = Callable[[Row], str]


def fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and spec:
        return format(v, spec)
    return str(v)


def spread(r: Row) -> str:
    """The rates of every round in k msgs/s, when there was more than one."""
    rates = r.get("rates_by_round") or []
    if len(rates) < 2:
        return ""
    return " / ".join("fail" if x is None else f"{x / 1000:.1f}" for x in rates)


def note(r: Row) -> str:
    """A row's notes column: the first line of its error, else what went wrong or disturbed it."""
    return r["error"].splitlines()[0][:90] if r.get("error") else _errs(r)


def _errs(r: Row) -> str:
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


def _stalls(r: Row) -> str:
    idle, queued = r.get("stall_idle") or {}, r.get("stall_queued") or {}
    return f"{fmt(idle.get('max_ms'))} / {fmt(queued.get('max_ms'))}"


# computed cells: (left-aligned, how)
CELLS: dict[str, tuple[bool, Cell]] = {
    "spread": (True, spread),
    "note": (True, note),
    "matched/joins": (False, lambda r: f"{fmt(r.get('matched'))}/{fmt(r.get('joins'))}"),
    "stalls": (False, _stalls),
}

# field: (title, number format); any other field is titled by its name with spaces for "_"
COLUMNS = {
    "rate": ("msgs/s", ",.0f"),
    "x_baseline": ("x baseline", ".2f"),
    "x_same_instance": ("x same-instance", ".2f"),
    "server_us_per_msg": ("server µs/msg", ""),
    "x_baseline_per_cpu": ("x baseline per CPU", ".2f"),
    "blocked_pct": ("blocked %", ""),
    "server_cpu_pct": ("server CPU %", ""),
    "client_cpu_pct": ("client CPU %", ""),
    "other_cpu_pct": ("other CPU %", ""),
    "spread": ("runs, k msgs/s", ""),
    "note": ("notes", ""),
    "matched/joins": ("matched", ""),
    "p50_ms": ("median", ""),
    "p95_ms": ("p95", ""),
    "p99_ms": ("p99", ""),
    "max_ms": ("max", ""),
    "joiner_p50_ms": ("joiner median", ""),
    "joiner_p99_ms": ("joiner p99", ""),
    "per_conn_kb": ("KB/connection", ""),
    "per_queued_kb": ("KB/queued user", ""),
    "step_kb": ("KB/connection from the level below", ""),
    "step_x_baseline": ("x baseline", ".2f"),
    "queued_x_baseline": ("x baseline", ".2f"),
    "stalls": ("max ping RTT idle / queued, ms", ""),
    "x_one_instance": ("x 1 instance", ".2f"),
    "capacity_rate": ("capacity msgs/s", ",.0f"),
    "offered_rate": ("offered", ",.0f"),
    "sent_rate": ("sent msgs/s", ",.0f"),
    "max_reactor_lag_ms": ("max reactor lag ms", ""),
    "max_health_ms": ("max /health ms", ""),
    "max_heartbeat_lag_ms": ("max heartbeat lag ms", ""),
    "max_reactor_heartbeat_lateness_ms": ("max reactor heartbeat lateness ms", ""),
    "seconds": ("all open, s", ""),
    "open_p50_s": ("median, s", ""),
    "open_p99_s": ("p99, s", ""),
}


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def grid(
    heading: str,
    first: str,
    fields: str,
    rows: list[Row],
    *,
    titles: dict[str, str] | None = None,
    error: str = "",
) -> list[str]:
    """A table of ``rows``: the ``row`` column titled ``first``, then ``fields`` (space-separated;
    ``titles`` overrides :data:`COLUMNS` for this table); ``error`` is a line of its own instead of
    rows that were not measured."""
    header, cells = [first], [(True, _value("row", ""))]
    for f in fields.split():
        title, spec = COLUMNS.get(f, (f.replace("_", " "), ""))
        header.append((titles or {}).get(f, title))
        cells.append(CELLS.get(f) or (False, _value(f, spec)))
    rule = "|" + "|".join("---" if left else "---:" for left, _ in cells) + "|"
    out = [heading, "", _line(header), rule]
    if error:
        out.append(_line(["-"] * (len(cells) - 1) + [error]))
    out += [_line([cell(r) for _, cell in cells]) for r in rows]
    return [*out, ""]


def _value(key: str, spec: str) -> Cell:
    return lambda r: fmt(r.get(key), spec)


def table(results: dict[str, Any]) -> str:
    """The results of every scenario that ran, as Markdown tables, then the run's notes."""
    out: list[str] = []
    rel = results.get("relay")
    if rel:
        rounds = (
            f"; msgs/s: the median of {rel['repeat']} interleaved runs, ratios: the median "
            "of the ratios within each run"
            if rel["repeat"] > 1
            else ""
        )
        heading = (
            f"**Relay throughput** ({rel['pairs']} pairs, window {rel['window']}, 60-byte "
            f"messages or varied chat lines, {rel['duration_s']:g} s measured{rounds}; "
            "teen/adult rows against the bare relay fed the same lines)"
        )
        fields = "rate x_baseline x_same_instance server_us_per_msg x_baseline_per_cpu"
        fields += " blocked_pct server_cpu_pct client_cpu_pct other_cpu_pct spread note"
        out += grid(heading, "row", fields, rel["rows"])
    lat = results.get("latency")
    if lat:
        heading = (
            f"**Match latency** (joins at {lat['rate']:g}/s into one queue for "
            f"{lat['seconds']:g} s; client-observed join → matched, ms)"
        )
        fields = "matched/joins p50_ms p95_ms p99_ms max_ms joiner_p50_ms joiner_p99_ms"
        out += grid(heading, "engine", fields + " other_cpu_pct note", lat["rows"])
    mem = results.get("memory")
    if mem:
        heading = "**Memory** (server RSS growth; idle = connected, queued = waiting in a queue)"
        fields = "connections connected per_conn_kb x_baseline step_kb step_x_baseline"
        fields += " per_queued_kb queued_x_baseline stalls note"
        out += grid(heading, "server", fields, mem["rows"])
    sc = results.get("scaleout")
    if sc:
        out += grid(
            f"**Scale-out behind nginx** ({sc.get('pairs')} pairs; {sc.get('note', '')})",
            "instances",
            "rate x_one_instance server_cpu_pct client_cpu_pct other_cpu_pct spread note",
            sc.get("rows", []),
            titles={"server_cpu_pct": "servers+nginx CPU %"},
            error=sc.get("error") or "",
        )
    ov = results.get("overload")
    if ov:
        out += overload_tables(ov)
    ch = results.get("churn")
    if ch:
        heading = (
            f"**Connection churn** (rounds of connect, join, match, "
            f"{ch['messages_per_chat']} messages, skip, close; server RSS)"
        )
        fields = "close rounds connections_per_round start_mb first_round_mb last_round_mb"
        fields += " growth_mb growth_kb_per_connection note"
        out += grid(heading, "server", fields, ch["rows"])
    hp = results.get("heap")
    if hp:
        out += heap_tables(hp)
    notes = list(results.get("notes") or [])
    if (results.get("limits") or {}).get("note"):
        notes.insert(0, results["limits"]["note"])
    if notes:
        out += ["Notes:", *(f"- {n}" for n in notes), ""]
    return "\n".join(out)


def heap_tables(hp: dict[str, Any]) -> list[str]:
    """The heap rows (``bench/heap.py``), then where anygle's bytes were allocated."""
    heading = "**Python heap** (tracemalloc; bytes per idle connection, and more per queued user)"
    fields = "connections connected bytes_per_connection x_baseline anygle_bytes"
    out = grid(
        heading,
        "server",
        fields + " bytes_per_queued_extra note",
        hp["rows"],
        titles={
            "bytes_per_connection": "bytes/connection",
            "anygle_bytes": "of which anygle's code",
            "bytes_per_queued_extra": "bytes more when queued",
        },
    )
    for r in hp["rows"]:
        for phase, key, title in (
            ("idle", "top", "per idle connection"),
            ("idle", "top_anygle", "per idle connection in anygle's code"),
            ("queued_total", "top_anygle", "per queued user in anygle's code"),
        ):
            sites = (r.get(phase) or {}).get(key)
            if not sites:
                continue
            out += [f"{r['row']}, allocated {title} (top {len(sites)}):", ""]
            out += ["| where | bytes | blocks |", "|---|---:|---:|"]
            out += [f"| `{s['where']}` | {s['bytes']} | {s['blocks']} |" for s in sites]
            out.append("")
    return out


def overload_tables(ov: dict[str, Any]) -> list[str]:
    """The overload rows (``bench/overload.py``) and the connect storm's."""
    heading = (
        f"**Overload** ({ov['pairs']} pairs at {ov['factor']:g}x the relay capacity measured "
        f"in the same run, {ov['seconds']:g} s, {ov['flooders']} connections flooding "
        "malformed frames; Redis: pairs across 2 instances)"
    )
    fields = "capacity_rate offered_rate sent_rate delivered lost duplicated reordered chats_ended"
    fields += " max_reactor_lag_ms max_health_ms max_heartbeat_lag_ms"
    fields += " max_reactor_heartbeat_lateness_ms flood_frames note"
    out = grid(heading, "engine", fields, ov.get("rows", []))
    if ov.get("storm"):
        heading = (
            f"**Connect storm** ({ov['storm_connections']:,} connections at once; anygle with "
            "its default listener, the bare relay with backlog=4096)"
        )
        fields = "seconds x_baseline open_p50_s open_p99_s failed note"
        out += grid(heading, "server", fields, ov["storm"], titles={"x_baseline": "x bare relay"})
    return out
