"""Helpers for tests that run real processes (twistd instances)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).with_name("twistd"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instance:
    """``twistd -n anygle`` as a subprocess, on free loopback ports."""

    def __init__(self, *args: str, name: str = "it", log_dir: Path | None = None) -> None:
        self.ws_port, self.http_port = free_port(), free_port()
        self.name = name
        self.args = [
            TWISTD,
            "-n",
            "--pidfile=",
            "anygle",
            "--ws",
            f"tcp:{self.ws_port}:interface=127.0.0.1",
            "--http",
            f"tcp:{self.http_port}:interface=127.0.0.1",
            "--instance-id",
            name,
            *args,
        ]
        self.log_path = (log_dir or Path("/tmp")) / f"anygle-{name}-{os.getpid()}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Instance:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/health", timeout=1)
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not come up: {self.log_path.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")
