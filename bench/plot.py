"""The run as a picture beside its JSON (``bench/results/<name>.png``): the latency CDF and the
relay and scale-out throughput bars.  Optional: without matplotlib there is no picture."""

from __future__ import annotations

from typing import Any


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
