"""The SSH admin console: public keys only, the namespace helpers work over a real SSH session."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import Instance, free_port

pytestmark = pytest.mark.slow  # real processes: not in the fast loop


def keypair(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


PROMPT = b">>> "  # drawn again on every keystroke; a new one starts a line


def ssh(port: int, key: Path, commands: list[str], wait: float = 8.0) -> tuple[int, str]:
    """Type ``commands`` into an interactive SSH session, each once the console prompts for it;
    return the exit code and the screen."""
    proc = subprocess.Popen(
        [
            "ssh",
            "-tt",
            "-p",
            str(port),
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "operator@127.0.0.1",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdout = proc.stdout  # narrowed for prompted() below
    screen = bytearray()

    def prompted(since: int, new_line: bool) -> bool:
        """Read until the console prompts after ``since``; False when the session ended."""
        deadline = time.monotonic() + wait
        wanted = b"\n" + PROMPT if new_line else PROMPT
        while screen.find(wanted, since) < 0:
            ready, _, _ = select.select([stdout], [], [], max(0, deadline - time.monotonic()))
            chunk = os.read(stdout.fileno(), 65536) if ready else b""
            if not chunk:
                return False
            screen.extend(chunk)
        return True

    since = 0
    for n, command in enumerate([*commands, "\x04"]):  # ^D leaves the manhole
        if not prompted(since, new_line=n > 0):
            break
        since = len(screen)
        try:
            proc.stdin.write(command.encode() + (b"" if command == "\x04" else b"\r"))
            proc.stdin.flush()
        except BrokenPipeError:
            break
    try:
        out, _ = proc.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, (bytes(screen) + out).decode(errors="replace")


@pytest.fixture
def console(tmp_path):
    good, bad = keypair(tmp_path / "good"), keypair(tmp_path / "bad")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text((tmp_path / "good.pub").read_text())
    port = free_port()
    host_key = tmp_path / "state" / "host_key"
    inst = Instance(
        "--manhole",
        f"tcp:{port}:interface=127.0.0.1",
        "--manhole-keys",
        str(authorized),
        "--manhole-host-key",
        str(host_key),
        name="manhole",
    ).start()
    yield inst, port, good, bad, host_key
    inst.stop()


def test_console_runs_helpers_with_the_right_key(console):
    _, port, good, _, host_key = console
    assert host_key.exists() and (os.stat(host_key).st_mode & 0o777) == 0o600
    _, screen = ssh(
        port,
        good,
        [
            "stats()",
            "ban_user('u-123', 3600, 'Harassment')",
            "engine.get_ban('u-123', None).addCallback(lambda r: print('ban reason:', r))",
            "print(helpers())",
        ],
    )
    assert "'totalOnline': 0" in screen, screen
    assert "banned:users:u-123 = 'Harassment' for 3600 s" in screen, screen
    assert "ban reason: Harassment" in screen, screen
    assert "ban_ip:" in screen and "reload_moderation:" in screen, screen


def test_console_refuses_a_wrong_key(console):
    _, port, _, bad, _ = console
    code, screen = ssh(port, bad, ["stats()"])
    assert code == 255 and "Permission denied" in screen, screen
    assert "totalOnline" not in screen
