"""The daemon as users run it: ``twistd -n anygle`` and the README's example client."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.harness import ROOT, Instance

pytestmark = pytest.mark.slow  # real processes: not in the fast loop


def test_twistd_serves_the_example_client_and_stops_cleanly():
    inst = Instance().start()
    try:
        result = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "chat_client.py"), inst.url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert sum("matched in room" in line for line in lines) == 2, result.stdout
        assert sum("got 'hello from" in line for line in lines) == 2, result.stdout
    finally:
        code = inst.stop()
    # twistd re-raises the signal it stopped on, so a clean SIGTERM stop reads as -SIGTERM
    assert code == -signal.SIGTERM, inst.output()[-3000:]
    assert "Server Shut Down." in inst.output()
    assert "Traceback" not in inst.output()
    # one line at start says what runs and where to reach it
    summary = [line for line in inst.output().splitlines() if "engine memory; WebSocket on" in line]
    assert len(summary) == 1, inst.output()[-3000:]
    assert f"WebSocket on port {inst.ws_port}" in summary[0]
    assert f"web client at http://localhost:{inst.http_port}/" in summary[0]


def test_readme_shows_the_example_client_verbatim():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("The example client, in full:\n\n```python\n", 1)[1].split("```", 1)[0]
    source = (ROOT / "examples" / "chat_client.py").read_text()
    code = source.split('"""', 2)[2].lstrip("\n")  # without the module docstring
    assert block == code
