"""deploy/local/run.sh, as a new user runs it: Redis, two instances and nginx from a private
folder without root; two strangers meet through nginx; ``stop`` leaves nothing running."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from tests.harness import ROOT, free_port
from tests.wsclient import Client, match

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

SCRIPT = ROOT / "deploy" / "local" / "run.sh"


def run(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def alive(pidfiles: list[Path]) -> list[str]:
    pids = [p.read_text().strip() for p in pidfiles if p.exists()]
    return [pid for pid in pids if os.path.exists(f"/proc/{pid}")]


@pytest_twisted.ensureDeferred
async def test_two_instances_behind_nginx_without_root(tmp_path):
    port = free_port()
    base = free_port()  # instances listen on base+1, base+2 (and base+101, base+102)
    env = dict(
        os.environ,
        DIR=str(tmp_path / "local"),
        PORT=str(port),
        REDIS_PORT=str(free_port()),
        WS_BASE=str(base),
        HTTP_BASE=str(base + 100),
    )
    try:
        out = run(env, "start", "2")
        pidfiles = sorted((tmp_path / "local").glob("*.pid"))
        assert f"http://127.0.0.1:{port}/" in out
        assert len(alive(pidfiles)) == 4, pidfiles  # redis, two instances, nginx
        headers = {"X-Forwarded-For": "198.51.100.1"}
        a = await Client.connect(port, headers=headers)
        b = await Client.connect(port, headers={"X-Forwarded-For": "198.51.100.2"})
        await match(a, b)
        a.send("message", {"content": "hello"})
        assert (await b.expect("message"))["data"]["content"] == "hello"
        await a.close()
        await b.close()
    finally:
        out = run(env, "stop")  # also after a failed start: nothing may be left running
    assert "stopped" in out
    assert alive(pidfiles) == []
