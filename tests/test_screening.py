"""Moderation through the real server: warnings, blocks, bans, live rule reloads."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import pytest_twisted

from tests.harness import Instance, wait_for
from tests.test_http import get
from tests.wsclient import Client


async def warning(c: Client, severity: str) -> dict:
    frame = await c.expect("moderation_warning")
    assert frame["data"]["severity"] == severity, frame
    assert isinstance(frame["data"]["message"], str) and frame["data"]["message"]
    return frame


async def delivered(a: Client, b: Client, text: str) -> None:
    """``a`` says ``text`` and ``b`` gets it as it was written."""
    a.send("message", {"content": text})
    assert (await b.expect("message"))["data"]["content"] == text


@pytest_twisted.ensureDeferred
async def test_teen_phone_number_split_over_three_messages_is_blocked(server):
    a, b = await server.pair(age="teen")
    for part in ("415", "892"):
        await delivered(a, b, part)
    a.send("message", {"content": "3371"})
    await warning(a, "high")
    await delivered(a, b, "what music do you like?")
    assert not [f for f in b.received if f["type"] == "message" and "3371" in str(f)]


@pytest_twisted.ensureDeferred
async def test_adults_may_share_a_number_unless_configured(make_server):
    server = await make_server()
    a, b = await server.pair()
    a.send("message", {"content": "text me 415-892-3371"})
    assert "415-892-3371" in (await b.expect("message"))["data"]["content"]
    strict = await make_server(protect_adults=True)
    c, d = await strict.pair()
    c.send("message", {"content": "text me 415-892-3371"})
    await warning(c, "high")
    await d.quiet(0.3)


@pytest_twisted.ensureDeferred
async def test_profanity_is_delivered_with_a_low_warning(server):
    a, b = await server.pair()
    await delivered(a, b, "what the fuck")
    await warning(a, "low")


@pytest_twisted.ensureDeferred
async def test_three_medium_warnings_then_a_block(server):
    a, b = await server.pair()
    insults = ["you're a worthless piece of shit", "shut up you ugly whore", "kill yourself"]
    for text in insults[:2]:  # warnings 1 and 2: delivered with a warning
        await delivered(a, b, text)
        await warning(a, "medium")
    a.send("message", {"content": insults[2]})  # warning 3: blocked
    await warning(a, "medium")
    await delivered(a, b, "sorry")  # the block never arrived
    # the strikes stick to the address: a reconnect does not wipe them
    await a.close()
    await b.expect("partner_disconnected")
    a2 = await server.client()
    b.send("skip")
    a2.join()
    await a2.expect("matched")
    await b.expect("matched")
    a2.send("message", {"content": "go hang yourself"})
    await warning(a2, "medium")
    await delivered(a2, b, "hi")


@pytest_twisted.ensureDeferred
async def test_unmoderated_queue_only_applies_zero_tolerance_and_doxing(server):
    a, b = await server.pair(queue="unmoderated")
    await delivered(a, b, "shut up you ugly whore")
    await a.quiet(0.2)


@pytest_twisted.ensureDeferred
async def test_zero_tolerance_bans_user_and_address(server):
    a, b = await server.pair()
    a.send("message", {"content": "i want to have sex with a 12 year old"})
    await warning(a, "high")
    err = await a.expect("error")
    assert err["data"]["code"] == "BANNED"
    await a.closed
    assert a.close_code == 1008
    await b.expect("partner_disconnected")
    assert not [f for f in b.received if f["type"] == "message"]
    again = await Client.connect(server.ws_port, wait_connected=False)
    frame = await again.next()
    assert frame["type"] == "error" and frame["data"]["code"] == "BANNED"
    await again.closed
    assert await server.engine.get_ban(a.user_id, None) == "moderation: minor_sexual"
    assert await server.engine.get_ban(None, "127.0.0.1") == "moderation: minor_sexual"
    if server.service.settings.engine == "redis":  # the seed's keys, readable with redis-cli
        redis = server.service.settings.redis.split(":")[2].split("/")[0]
        out = subprocess.run(
            ["redis-cli", "-p", redis, "GET", "banned:ips:127.0.0.1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "moderation: minor_sexual"
        out = subprocess.run(
            ["redis-cli", "-p", redis, "TTL", f"banned:users:{a.user_id}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == "-1"  # permanent by default


@pytest_twisted.ensureDeferred
async def test_stats_count_moderation_actions(server):
    a, b = await server.pair()
    a.send("message", {"content": "what the fuck"})
    await warning(a, "low")
    a.send("message", {"content": "kill yourself"})
    await warning(a, "medium")
    await b.expect("message")
    await b.expect("message")
    code, _, body = await get(server.http_port, "/stats")
    assert code == 200
    moderation = json.loads(body)["moderation"]
    assert moderation["total"] == 2
    assert moderation["byTier"] == {"low": 1, "medium": 1}
    assert moderation["byOutcome"] == {"deliver": 2}
    assert set(moderation["byCategory"]) == {"profanity", "harassment"}


@pytest.mark.slow
def test_sighup_reloads_operator_rules(tmp_path: Path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "profanity.txt").write_text("")
    inst = Instance("--moderation-rules", str(rules), name="sighup").start()
    try:
        result = _chat(inst, "you are a flibbertigibbet")
        assert "moderation_warning" not in result
        (rules / "profanity.txt").write_text("flibbertigibbet\n")
        inst.signal(signal.SIGHUP)
        wait_for(lambda: "moderation rules reloaded" in inst.output(), 10, "rules reloaded")
        result = _chat(inst, "you are a flibbertigibbet")
        assert "moderation_warning" in result
    finally:
        inst.stop()


def _chat(inst: Instance, text: str) -> str:
    """Two websocket-client users: the first says ``text``; what did it get back?"""
    import msgpack
    import websocket

    a = websocket.create_connection(inst.url, timeout=10)
    b = websocket.create_connection(inst.url, timeout=10)
    try:
        for ws in (a, b):
            assert msgpack.unpackb(ws.recv())["type"] == "connected"
            ws.send_binary(
                msgpack.packb(
                    {
                        "type": "join",
                        "data": {"ageCategory": "adult", "mode": "text", "queueType": "moderated"},
                    }
                )
            )
        for ws in (a, b):
            while msgpack.unpackb(ws.recv())["type"] != "matched":
                pass
        a.send_binary(msgpack.packb({"type": "message", "data": {"content": text}}))
        a.send_binary(msgpack.packb({"type": "ping"}))
        seen = []
        while True:
            frame = msgpack.unpackb(a.recv())
            seen.append(frame["type"])
            if frame["type"] == "pong":
                return " ".join(seen)
    finally:
        a.close()
        b.close()
