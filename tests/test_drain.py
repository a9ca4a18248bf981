"""SIGTERM under load: stop accepting, tell partners, close every socket with 1001, exit fast."""

from __future__ import annotations

import signal
import time

import pytest_twisted
from twisted.internet import threads

from tests.conftest import sleep
from tests.harness import Instance, limits_off_flags
from tests.wsclient import Client, Closed


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
        await sleep(0.5)
        for c in clients[:50]:  # chatting pairs keep talking while the stop comes
            c.send("message", {"content": "busy"})
        started = time.monotonic()
        inst.signal(signal.SIGTERM)
        readers = [drain_frames(c) for c in clients]
        results = [await r for r in readers]
        code = await threads.deferToThread(inst.proc.wait, 15)
        elapsed = time.monotonic() - started
    finally:
        inst.stop()
    assert elapsed < 10, elapsed
    assert code == -signal.SIGTERM
    assert [c.close_code for c in clients] == [1001] * 60, [c.close_code for c in clients]
    assert all(c.close_reason == "going away" for c in clients)
    matched = [kinds for kinds in results if "matched" in kinds]
    assert len(matched) >= 40  # most video users were in a chat
    told = [kinds for kinds in matched if "partner_disconnected" in kinds]
    assert len(told) >= len(matched) // 2  # one of each pair is told, then closed
    out = inst.output()
    assert "Traceback" not in out and "Server Shut Down." in out
