"""SIGTERM under load: stop accepting, tell partners, close every socket with 1001, exit fast."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest
import pytest_twisted
import websocket
from twisted.internet import threads

from tests.harness import (
    ROOT,
    Instance,
    RedisServer,
    eventually,
    free_port,
    limits_off_flags,
    stop_process,
    twistd_argv,
    wait_for,
)
from tests.wsclient import Client, Closed

pytestmark = pytest.mark.slow  # real processes: not in the fast loop


def in_chat(c: Client) -> bool:
    return any(f["type"] == "matched" for f in c.received)


async def drain_frames(c: Client) -> list[str]:
    kinds = []
    try:
        while True:
            kinds.append((await c.next(15))["type"])
    except Closed:
        return kinds


@pytest_twisted.ensureDeferred
async def test_sigterm_drains_every_client_and_exits_quickly():
    inst = Instance(*limits_off_flags(), name="drain").start()
    try:
        clients = [await Client.connect(inst.ws_port) for _ in range(60)]
        for i, c in enumerate(clients):
            c.join(mode="video" if i < 50 else "voice", interests=[f"x{i % 7}"])
        # most video users are in a chat (an odd one out per interest waits for the fallback)
        await eventually(lambda: sum(map(in_chat, clients)) >= 40, what="40 users matched")
        for c in clients[:50]:  # chatting pairs keep talking while the stop comes
            c.send("message", {"content": "busy"})
        inst.signal(signal.SIGTERM)
        readers = [drain_frames(c) for c in clients]
        results = [await r for r in readers]
        # gone within 10 s (shutdown-timeout is 8 s)
        assert inst.proc is not None  # started
        code = await threads.deferToThread(inst.proc.wait, 10)
    finally:
        inst.stop()
    assert code == -signal.SIGTERM
    assert [c.close_code for c in clients] == [1001] * 60, [c.close_code for c in clients]
    assert all(c.close_reason == "going away" for c in clients)
    matched = [kinds for kinds in results if "matched" in kinds]
    assert len(matched) >= 40  # most video users were in a chat
    told = [kinds for kinds in matched if "partner_disconnected" in kinds]
    assert len(told) >= len(matched) // 2  # one of each pair is told, then closed
    out = inst.output()
    assert "Traceback" not in out and "Server Shut Down." in out


def test_a_stop_does_not_wait_for_a_redis_name_lookup_that_hangs(tmp_path):
    """Redis's host name whose DNS server does not answer (a compose deployment whose Redis
    container stopped first): lookups block a thread for as long as the resolver's timeout
    (30 s here), and a stop must not wait for them.  The instance runs with a resolv.conf of
    its own (a private mount namespace) naming a DNS server that reads nothing."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.77", 53))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.77\noptions timeout:30 attempts:1\n")
    argv = twistd_argv(
        free_port(),
        free_port(),
        "--engine=redis",
        "--redis=redis://redis.anygle.test:6379/0",
        instance_id="lookup",
    )
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    log = tmp_path / "twistd.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script, str(resolv), *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
    try:
        # generous: a busy machine, and the start-up login check gives the lookup 2 s
        wait_for(lambda: "WebSocket on port" in log.read_text(), 90, "the instance started")
        wait_for(lambda: silent.recv(512, socket.MSG_PEEK), 10, "a lookup in flight")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        took = time.monotonic() - started
    finally:
        stop_process(proc)
        silent.close()
    assert took < 10, f"the stop took {took:.1f} s:\n{log.read_text()[-2000:]}"
    assert "Server Shut Down." in log.read_text()


@pytest.mark.parametrize("redis_state", ["refused", "hanging"])
def test_a_stop_with_redis_gone_drains_and_exits_in_time(redis_state):
    """Redis killed (connections refused) or frozen (connections accepted, nothing answered):
    a SIGTERM'd instance with users still drains and exits within its shutdown timeout."""
    redis = RedisServer().start()
    inst = Instance("--engine=redis", f"--redis={redis.url}", name=f"stop-{redis_state}")
    try:
        inst.start()
        a = websocket.create_connection(f"ws://127.0.0.1:{inst.ws_port}/", timeout=10)
        assert a.recv()  # connected
        assert redis.proc is not None
        if redis_state == "refused":
            redis.kill()
        else:
            redis.proc.send_signal(signal.SIGSTOP)
        time.sleep(3)  # the engine notices; reconnections, commands and leases are under way
        started = time.monotonic()
        code = inst.stop(timeout=30)
        took = time.monotonic() - started
        a.close()
    finally:
        inst.kill()
        if redis.proc is not None and redis.proc.poll() is None:
            redis.proc.send_signal(signal.SIGCONT)
        redis.close()
    assert code == -signal.SIGTERM and took < 10, f"exit {code} after {took:.1f} s"
    assert "Server Shut Down." in inst.output()
