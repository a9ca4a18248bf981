"""Overload on the Redis engine loses nothing and ends no chat (issue 10; a short version of
``python -m bench overload``).

Two ``twistd`` instances on the test redis-server; 40 pairs, every pair split across the two
instances, send numbered messages both ways as fast as an open loop at 40,000 msgs/s allows (more
than this machine relays: TCP backpressure holds the rest back), while five connections flood the
first instance with bursts of 2,000 malformed frames.  Asserted are counts only: every message
sent arrives once and in order, no chat is ended, no chat socket is closed by the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.harness import ROOT, Instance, limits_off_flags

pytestmark = pytest.mark.slow  # real processes: not in the fast loop


def run_overload_client(job: dict, timeout: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "bench.overloadclient"],
        input=json.dumps(job).encode() + b"\n",
        capture_output=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    fatal = [e for e in events if e["ev"] == "fatal"]
    assert not fatal, fatal
    results = [e for e in events if e["ev"] == "result"]
    assert results, (proc.returncode, events[-3:], proc.stderr[-2000:])
    return results[0]


def test_overload_across_two_instances_loses_nothing(redis, tmp_path):
    flags = ["--engine", "redis", "--redis", redis.url, *limits_off_flags()]
    instances = [Instance(*flags, name=f"ovl-{n}", log_dir=tmp_path) for n in ("a", "b")]
    try:
        for inst in instances:
            inst.start()
        job = {
            "kind": "overload",
            "targets": [("127.0.0.1", inst.ws_port) for inst in instances],
            "pairs": 40,
            "rate": 40_000,
            "duration": 6,
            "drain": 30,
            "inflight": 500,
            "flooders": 5,
            "flood_burst": 2000,
            "tag": "ovltest",
            "queue": "unmoderated",
            "setup_timeout": 30,
        }
        r = run_overload_client(job, timeout=90)
        for inst in instances:
            assert inst.proc is not None and inst.proc.poll() is None, inst.output()[-2000:]
    finally:
        for inst in instances:
            inst.stop()
    print({k: v for k, v in r.items() if k != "limits"})
    assert r["sent"] > 10_000, r  # it did run (and through both instances)
    assert r["flood_frames"] >= 5 * 2000, r
    assert r["flood_errors"].get("TOO_MANY_ERRORS", 0) >= 5, r  # the flood was handled
    assert r["errors"] == {}, r
    assert r["lost"] == 0, r
    assert r["duplicated"] == 0, r
    assert r["reordered"] == 0, r
    assert r["chats_ended"] == 0, r
    assert r["closed_by_server"] == 0, r
    assert r["delivered_unique"] == r["sent"], r
