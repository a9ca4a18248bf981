"""Abuse limits, client addresses, live bans, origins and slow readers, through the real server."""

from __future__ import annotations

import gc
import weakref

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from anygle.clientip import ClientAddressResolver, parse_networks
from anygle.limits import MESSAGE_LIMITS, gcra
from tests.harness import eventually, sleep
from tests.test_http import get
from tests.wsclient import Client, Closed


@pytest_twisted.ensureDeferred
async def test_sixth_connection_from_one_address_is_refused(make_server):
    server = await make_server(max_connections_per_ip=5)
    five = [await server.client() for _ in range(5)]
    sixth = await Client.connect(server.ws_port, wait_connected=False)
    frame = await sixth.next()
    assert frame["type"] == "error" and frame["data"]["code"] == "TOO_MANY_CONNECTIONS"
    await sixth.closed
    assert sixth.close_code == 1008 and sixth.close_reason is not None
    assert "at most 5 connections" in sixth.close_reason
    # another address is not affected
    other = await Client.connect(server.ws_port, bind="127.0.0.2")
    assert other.user_id
    await other.close()
    # a slot frees when a connection closes
    await five[0].close()
    await eventually(lambda: len(server.service.factory.connections) == 4, what="slot freed")
    again = await server.client()
    assert again.user_id


@pytest_twisted.ensureDeferred
async def test_flood_gets_rate_limited_then_closed(make_server):
    server = await make_server(message_limits=dict(MESSAGE_LIMITS))
    a, b = await server.pair()
    for i in range(15):  # the burst passes
        a.send("message", {"content": f"m{i}"})
    for i in range(15):
        assert (await b.expect("message"))["data"]["content"] == f"m{i}"
    a.send("message", {"content": "one too many"})
    await a.error("RATE_LIMITED")
    for _ in range(60):  # keeps flooding
        a.send("message", {"content": "spam"})
    await a.closed
    assert a.close_code == 1008
    codes = [f["data"]["code"] for f in a.received if f["type"] == "error"]
    assert set(codes) == {"RATE_LIMITED"} and len(codes) > 50
    await b.expect("partner_disconnected")
    await b.quiet(0.1)  # none of the spam reached the partner


@pytest_twisted.ensureDeferred
async def test_video_call_setup_passes_the_signal_limit(make_server):
    server = await make_server(message_limits=dict(MESSAGE_LIMITS))
    a, b = await server.pair(mode="video")
    a.send("offer", {"type": "offer", "sdp": "v=0"})
    b.send("answer", {"type": "answer", "sdp": "v=0"})
    for i in range(60):
        a.send("ice_candidate", {"candidate": f"candidate:{i}", "sdpMLineIndex": 0})
        b.send("ice_candidate", {"candidate": f"candidate:{i}", "sdpMLineIndex": 0})
    await b.expect("offer")
    await a.expect("answer")
    for i in range(60):
        assert (await b.expect("ice_candidate"))["data"]["candidate"] == f"candidate:{i}"
        assert (await a.expect("ice_candidate"))["data"]["candidate"] == f"candidate:{i}"


@pytest_twisted.ensureDeferred
async def test_skip_bot_is_limited(make_server):
    server = await make_server(message_limits=dict(MESSAGE_LIMITS))
    bot = await server.client()
    bot.join()
    for _ in range(10):
        bot.send("skip")
    await bot.error("RATE_LIMITED")


@pytest_twisted.ensureDeferred
async def test_http_rate_limit_per_address(make_server):
    server = await make_server(rate_limit=100)
    started = reactor.seconds()
    served = 0
    while True:
        code, _, body = await get(server.http_port, "/health")
        if code != 200:
            break
        served += 1
        assert served < 200, "never limited"
    elapsed = reactor.seconds() - started
    assert code == 429 and b"too many requests" in body
    # 100 at once, plus one more for every 0.6 s the requests themselves took (GCRA refills)
    assert 100 <= served <= 100 + elapsed / 0.6 + 1, (served, elapsed)
    code, _, _ = await get(server.http_port, "/stats")
    assert code == 429


@pytest_twisted.ensureDeferred
async def test_websocket_handshake_rate_limit(make_server):
    server = await make_server(rate_limit=20)
    for _ in range(20):
        c = await Client.connect(server.ws_port)
        await c.close()
    with pytest.raises(Closed, match="429"):  # refused handshake: never opens
        await Client.connect(server.ws_port)
    ok = await Client.connect(server.ws_port, bind="127.0.0.3")  # other addresses unaffected
    await ok.close()


@pytest_twisted.ensureDeferred
async def test_spoofed_forwarded_for_from_untrusted_peer_does_not_dodge_an_ip_ban(make_server):
    server = await make_server(trusted_proxies="10.0.0.0/8")  # loopback is NOT a proxy here
    await server.engine.ban("ips", "127.0.0.1", "Spam", None)
    c = await Client.connect(
        server.ws_port, headers={"X-Forwarded-For": "203.0.113.7"}, wait_connected=False
    )
    frame = await c.next()
    assert frame["data"]["code"] == "BANNED" and "Spam" in frame["data"]["message"]
    await c.closed
    assert c.close_code == 1008


@pytest_twisted.ensureDeferred
async def test_forwarded_for_from_trusted_peer_is_the_client_address(make_server):
    server = await make_server(trusted_proxies="127.0.0.1/32")
    await server.engine.ban("ips", "203.0.113.7", "Spam", None)
    banned = await Client.connect(
        server.ws_port, headers={"X-Forwarded-For": "203.0.113.7"}, wait_connected=False
    )
    assert (await banned.next())["data"]["code"] == "BANNED"
    fine = await Client.connect(server.ws_port, headers={"X-Forwarded-For": "203.0.113.8"})
    assert server.hub.sessions[fine.user_id].ip == "203.0.113.8"
    await fine.close()


@pytest.mark.slow
@pytest.mark.parametrize("engine_name", ["redis"], indirect=True)  # memory: tests/test_core.py
@pytest_twisted.ensureDeferred
async def test_ban_kicks_connected_users_within_a_second(make_server):
    server = await make_server()
    a, b = await server.pair()
    c = await server.client()
    await server.engine.ban("users", a.user_id, "Harassment", 86400)
    err = await a.expect("error", timeout=2)
    assert err["data"]["code"] == "BANNED" and "Harassment" in err["data"]["message"]
    await a.closed
    assert a.close_code == 1008
    await b.expect("partner_disconnected")
    await server.engine.ban("ips", "127.0.0.1", "Spam", 60)
    assert (await c.expect("error", timeout=2))["data"]["code"] == "BANNED"
    await c.closed


@pytest_twisted.ensureDeferred
async def test_banned_user_cannot_join(make_server):
    server = await make_server()
    c = await server.client()
    await server.engine.ban("users", c.user_id, "Spam", None)
    c.join()
    assert (await c.expect("error"))["data"]["code"] == "BANNED"


@pytest_twisted.ensureDeferred
async def test_origin_allow_list(make_server):
    server = await make_server(allowed_origins=("https://anygle.example",))
    ok = await Client.connect(server.ws_port, headers={"Origin": "https://anygle.example"})
    await ok.close()
    app = await Client.connect(server.ws_port)  # no Origin: not a browser
    await app.close()
    with pytest.raises(Closed, match=r"origin .* not allowed"):  # handshake refused
        await Client.connect(server.ws_port, headers={"Origin": "https://evil.example"})
    with pytest.raises(Closed, match=r"origin .null. not allowed"):
        await Client.connect(server.ws_port, headers={"Origin": "null"})


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_client_that_stops_reading_is_dropped_and_released(make_server):
    server = await make_server(max_queued_bytes=256 * 1024)
    slow, fast = await server.pair()
    proto = next(
        p
        for p in server.service.factory.connections
        if p.session and p.session.user_id == slow.user_id
    )
    ref = weakref.ref(proto)
    del proto
    slow.proto.transport.pauseProducing()  # stop reading from the socket
    text = "x" * 2000
    sent = 0
    while not any(f["type"] == "partner_disconnected" for f in fast.received):
        for _ in range(200):
            fast.send("message", {"content": text})
        sent += 200
        await sleep(0.01)  # let the server write (and find the reader slow)
        assert sent < 40_000, "the slow reader was never dropped"
    await eventually(lambda: slow.user_id not in server.hub.sessions, what="slow reader gone")
    gc.collect()
    assert ref() is None  # its protocol (and the buffer it held) is gone
    slow.proto.transport.resumeProducing()
    with pytest.raises((Closed, defer.TimeoutError)):
        while True:
            await slow.next(5)


def test_gcra_allows_limit_per_window_and_refills():
    tat, now = 0.0, 1000.0
    results = []
    for _ in range(101):
        ok, tat = gcra(tat, now, 100, 60.0)
        results.append(ok)
    assert results == [True] * 100 + [False]
    ok, tat = gcra(tat, now + 0.6, 100, 60.0)  # one interval later: one more
    assert ok
    ok, _ = gcra(tat, now + 0.6, 100, 60.0)
    assert not ok


@pytest.mark.parametrize(
    ("peer", "xff", "real", "expected"),
    [
        ("198.51.100.1", ["203.0.113.9"], None, "198.51.100.1"),  # untrusted peer: header ignored
        ("127.0.0.1", ["203.0.113.9"], None, "203.0.113.9"),
        ("127.0.0.1", ["6.6.6.6, 203.0.113.9, 127.0.0.1"], None, "203.0.113.9"),
        ("127.0.0.1", ["6.6.6.6", "203.0.113.9"], None, "203.0.113.9"),  # two headers
        ("127.0.0.1", ["garbage, 203.0.113.9"], None, "203.0.113.9"),
        ("127.0.0.1", ["203.0.113.9, garbage"], None, "127.0.0.1"),
        ("127.0.0.1", [], "203.0.113.5", "203.0.113.5"),
        ("127.0.0.1", [], None, "127.0.0.1"),
        ("::1", ["2001:db8::7"], None, "2001:db8::7"),
        ("::ffff:127.0.0.1", ["[2001:db8::7]:443"], None, "2001:db8::7"),
        ("2001:db8::1", ["203.0.113.9"], None, "2001:db8::1"),
        ("127.0.0.1", ["127.0.0.2"], None, "127.0.0.2"),
    ],
)
def test_client_address_resolution(peer, xff, real, expected):
    resolver = ClientAddressResolver(parse_networks("127.0.0.1/32, ::1/128"))
    assert resolver.resolve(peer, xff, real) == expected
