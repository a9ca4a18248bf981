"""SIGTERM under load: stop accepting, tell partners, close every socket with 1001, exit fast."""

from __future__ import annotations

import signal

import pytest_twisted
from twisted.internet import threads

from tests.harness import Instance, eventually, limits_off_flags
from tests.wsclient import Client, Closed


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
