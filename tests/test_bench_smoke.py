"""Keeps the benchmark harness from rotting: ``python -m bench --quick`` on tiny numbers.

Memory engine and the bare relay only (no Redis, no nginx).  This checks that the harness runs end
to end and writes a well-formed table and JSON — never how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(
    *args: str, module: str = "bench", timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` (``bench`` by default) from the repository, without the
    caller's anygle config (about a minute alone; the timeout is for a machine busy with other
    tests too)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("ANYGLE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_bench_quick_writes_table_and_json(tmp_path):
    proc = bench(
        "--quick",
        "--no-redis",
        "--no-nginx",
        "--no-plot",
        "--name",
        "smoke",
        "--out",
        str(tmp_path),
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--rows",
        "baseline,memory-off,memory-on,baseline-teen,teen",
        "relay",
        "latency",
        "memory",
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "| row | msgs/s | x baseline" in proc.stdout
    assert "| engine | matched | median" in proc.stdout
    assert "| server | connections |" in proc.stdout

    path = str(tmp_path / "smoke.json")  # one file per run name, replaced by the next run
    results = json.loads(open(path).read())
    assert results["name"] == "smoke"
    assert results["machine"]["cpus"] >= 1

    rows = {r["row"]: r for r in results["relay"]["rows"]}
    assert set(rows) >= {"baseline", "memory-off", "memory-on", "redis-same", "redis-cross"}
    for name in ("baseline", "memory-off", "memory-on"):
        assert "error" not in rows[name], rows[name]
        assert rows[name]["rate"] > 0
        assert rows[name]["matched_pairs"] == rows[name]["pairs"]
        assert isinstance(rows[name]["x_baseline"], float)
    assert rows["redis-same"]["error"].startswith("not run")
    # what users send: varied teen lines, in chats that end and begin again, beside the bare
    # relay fed the same lines
    teen = rows["teen"]
    assert "error" not in teen and teen["rate"] > 0 and teen["lines"] == "teen", teen
    assert teen["chats"] > 0 and 0 <= teen["blocked_pct"] < 50
    assert isinstance(teen["x_baseline"], float)
    assert rows["baseline-teen"]["lines"] == "teen" and rows["baseline-teen"]["x_baseline"] == 1.0

    (memory, *_) = results["latency"]["rows"]
    assert memory["row"] == "memory" and "error" not in memory, memory
    assert memory["matched"] == memory["joins"] > 0
    assert memory["p50_ms"] <= memory["p99_ms"]

    mem = {r["row"]: r for r in results["memory"]["rows"]}
    assert set(mem) == {"baseline", "anygle-memory"}
    assert mem["anygle-memory"]["connected"] == mem["anygle-memory"]["connections"]
    assert mem["anygle-memory"]["queued"] == mem["anygle-memory"]["connected"]
    assert isinstance(mem["anygle-memory"]["per_conn_kb"], float)

    # two runs side by side (here the run with itself)
    cmp = bench("compare", path, path, timeout=30)
    assert cmp.returncode == 0, cmp.stderr
    assert "| relay | memory-on | x_baseline |" in cmp.stdout


def test_bench_churn_frees_closed_connections(tmp_path):
    """``python -m bench churn`` on tiny numbers: rounds run, RSS is read after each."""
    proc = bench(
        *("churn", "--churn-rounds", "3", "--churn-connections", "40"),
        *("--no-plot", "--name", "churn-smoke", "--out", str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "| server | close | rounds |" in proc.stdout
    results = json.loads((tmp_path / "churn-smoke.json").read_text())
    rounds = results["churn"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(r["matched"] == 40 and r["delivered"] > 0 for r in rounds), rounds
    assert results["churn"]["rows"][0]["close"] == "close frame"


def test_bench_heap_says_what_a_connection_holds(tmp_path):
    """``python -m bench heap`` on tiny numbers: both servers under tracemalloc, the heap per
    idle connection (and per queued user for anygle) and the lines that allocated it."""
    proc = bench(
        *("heap", "--heap-connections", "60"),
        *("--no-plot", "--name", "heap-smoke", "--out", str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "| server | connections | connected | bytes/connection |" in proc.stdout
    rows = {
        r["row"]: r for r in json.loads((tmp_path / "heap-smoke.json").read_text())["heap"]["rows"]
    }
    assert set(rows) == {"baseline", "anygle-memory"}, rows
    for r in rows.values():
        assert r["connected"] == 60 and r["bytes_per_connection"] > 0, r
        assert r["idle"]["top"] and "autobahn" in r["idle"]["by_owner"], r
    anygle = rows["anygle-memory"]
    assert anygle["queued"] == 60 and anygle["queued_total"]["top_anygle"], anygle
    assert anygle["x_baseline"] > 0 and "anygle" in anygle["idle"]["by_owner"], anygle


def test_msgpath_runs_every_row():
    """``bench.msgpath`` drives the hub as the protocol does (a few hundred messages: seconds)."""
    proc = bench("--messages", "300", "--no-json", module="bench.msgpath")
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| teen, varied")]
    assert len(rows) == 1, proc.stdout


def test_resume_bench_times_every_case(tmp_path):
    out = tmp_path / "resume.json"
    args = ("--pairs", "2", "--memory-pairs", "20", "--out", str(out))
    proc = bench(*args, module="bench.resume")
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert [r["case"] for r in result["times"]] == [
        "memory engine",
        "redis, same instance",
        "redis, another instance",
    ]
    assert result["memory"]["bytes_per_waiting_session"] > 0
