"""Per-address rules against IPv6 clients, on real sockets from real source addresses.

Runs only inside a network namespace of its own: ``tests/test_ipv6.py`` re-executes this file
with ``unshare -n`` (and ``ANYGLE_TEST_NETNS=1``); at import it brings ``lo`` up and puts
documentation addresses (2001:db8::/32) on it, which it must never do to the host's loopback.
Not collected by a plain ``pytest`` run (the file name does not start with ``test_``).

Networks: A = 2001:db8:1:2::/64 (the abuser), B = 2001:db8:1:3::/64 (a neighbour in the same /56
and /48), C = 2001:db8:2:1::/64 (elsewhere); the server listens on 2001:db8:ffff::1 and a trusted
proxy connects from 2001:db8:ffff::2.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.web.client import Agent, readBody

from anygle.console import build_namespace
from tests.wsclient import Client, Closed

if os.environ.get("ANYGLE_TEST_NETNS") != "1":
    pytest.skip(
        "runs only inside the network namespace tests/test_ipv6.py makes", allow_module_level=True
    )

SERVER, PROXY = "2001:db8:ffff::1", "2001:db8:ffff::2"
A = [f"2001:db8:1:2::a{i}" for i in range(1, 8)]
B1, C1 = "2001:db8:1:3::b1", "2001:db8:2:1::c1"
KEY_A = "2001:db8:1:2::/64"


def _setup_loopback() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for address in (SERVER, PROXY, *A, B1, C1):
        subprocess.run(
            ["ip", "-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad"], check=True
        )


_setup_loopback()

ENDPOINT = "tcp6:0:interface=" + SERVER.replace(":", "\\:")


async def start(make_server, **overrides):
    return await make_server(ws=ENDPOINT, http=ENDPOINT, **overrides)


async def connect(server, source: str, **kwargs) -> Client:
    c = await Client.connect(server.ws_port, host=SERVER, bind=source, **kwargs)
    server.clients.append(c)
    return c


async def refused(server, source: str, code: str, **kwargs) -> Client:
    """A connection from ``source`` that gets ``error code`` and is closed with 1008."""
    c = await connect(server, source, wait_connected=False, **kwargs)
    frame = await c.next()
    assert frame["type"] == "error" and frame["data"]["code"] == code, frame
    await c.closed
    assert c.close_code == 1008
    return c


async def handshake_refused(server, source: str) -> str:
    """Why a handshake was refused, as the client was told (the HTTP status is in it)."""
    with pytest.raises(Closed) as info:
        await connect(server, source)
    return str(info.value)


async def http_get(server, source: str, path: str = "/health") -> tuple[int, bytes]:
    agent = Agent(reactor, bindAddress=(source, 0))
    response = await agent.request(b"GET", f"http://[{SERVER}]:{server.http_port}{path}".encode())
    return response.code, await readBody(response)


def session_of(server, client: Client):
    return server.hub.sessions[client.user_id]


@pytest_twisted.ensureDeferred
async def test_sixth_connection_from_one_slash64_is_refused(make_server):
    server = await start(make_server, max_connections_per_ip=5)
    five = [await connect(server, a) for a in A[:5]]
    assert {session_of(server, c).abuse_key for c in five} == {KEY_A}
    assert [session_of(server, c).ip for c in five] == A[:5]
    sixth = await refused(server, A[5], "TOO_MANY_CONNECTIONS")
    assert sixth.close_reason is not None
    assert f"at most 5 connections per network ({KEY_A})" in sixth.close_reason
    for other in (B1, C1):  # another /64 is not affected
        c = await connect(server, other)
        assert session_of(server, c).abuse_key == other.rsplit("::", 1)[0] + "::/64"


@pytest_twisted.ensureDeferred
async def test_ban_of_one_address_slash64_refuses_the_others(make_server, engine_name, request):
    server = await start(make_server)
    console = build_namespace(server.service)
    inside, neighbour, elsewhere = [await connect(server, a) for a in (A[1], B1, C1)]
    answer = await _maybe(console["ban_ip"](A[0], 3600, "Spam"))
    assert answer == f"banned:ips:{KEY_A} = 'Spam' for 3600 s"
    assert (await inside.expect("error", timeout=3))["data"]["code"] == "BANNED"  # kicked
    await inside.closed
    await refused(server, A[2], "BANNED")  # a fresh address of the same /64
    for c in (neighbour, elsewhere):
        c.send("ping")
        assert (await c.expect("pong"))["type"] == "pong"
    assert await _maybe(console["unban_ip"](A[0]))
    await connect(server, A[2])
    # an operator's ban of one exact address (redis-cli SET) still refuses that address only
    if engine_name == "redis":
        request.getfixturevalue("redis").client("SET", f"banned:ips:{A[3]}", "by hand")
    else:
        await server.engine.ban("ips", A[3], "by hand", None)
    await refused(server, A[3], "BANNED")
    await connect(server, A[4])
    # a /56 ban (given as any CIDR of it) takes the neighbouring /64 too, not another /48
    answer = await _maybe(console["ban_ip"]("2001:db8:1:3::/56", None, "Raid"))
    assert answer == "banned:ips:2001:db8:1::/56 = 'Raid' (no expiry)"
    assert (await neighbour.expect("error", timeout=3))["data"]["code"] == "BANNED"
    await refused(server, B1, "BANNED")
    elsewhere.send("ping")
    await elsewhere.expect("pong")


@pytest.mark.parametrize("engine_name", ["memory"])  # counters and bans by key: as for IPv4
@pytest_twisted.ensureDeferred
async def test_strikes_and_moderation_bans_follow_the_slash64(make_server):
    server = await start(make_server)
    insults = ["you're a worthless piece of shit", "shut up you ugly whore", "kill yourself"]
    abuser, partner = await connect(server, A[0]), await connect(server, C1)
    abuser.join()
    await abuser.expect("searching")
    partner.join()
    await abuser.expect("matched")
    await partner.expect("matched")
    for text in insults:  # warnings 1 and 2 are delivered, the 3rd is blocked
        abuser.send("message", {"content": text})
        assert (await abuser.expect("moderation_warning"))["data"]["severity"] == "medium"
    for text in insults[:2]:
        assert (await partner.expect("message"))["data"]["content"] == text
    await abuser.close()
    await partner.expect("partner_disconnected")
    # the next address of the same /64 keeps the strikes: its first insult is blocked
    again = await connect(server, A[1])
    partner.send("skip")
    again.join()
    await again.expect("matched")
    await partner.expect("matched")
    again.send("message", {"content": "go hang yourself"})
    await again.expect("moderation_warning")
    again.send("message", {"content": "hi"})
    assert (await partner.expect("message"))["data"]["content"] == "hi"  # the insult never came
    # zero tolerance bans the /64, not just the address
    again.send("message", {"content": "i want to have sex with a 12 year old"})
    assert (await again.expect("moderation_warning"))["data"]["severity"] == "high"
    assert (await again.expect("error"))["data"]["code"] == "BANNED"
    await partner.expect("partner_disconnected")
    await refused(server, A[2], "BANNED")
    assert await server.engine.get_ban(None, KEY_A) == "moderation: minor_sexual"
    # the neighbouring /64 is neither banned nor struck: its first insult is delivered
    fine = await connect(server, B1)
    partner.send("skip")
    fine.join()
    await fine.expect("matched")
    await partner.expect("matched")
    fine.send("message", {"content": insults[0]})
    await fine.expect("moderation_warning")
    assert (await partner.expect("message"))["data"]["content"] == insults[0]


@pytest_twisted.ensureDeferred
async def test_handshake_and_http_rates_count_per_slash64(make_server):
    server = await start(make_server, rate_limit=3)
    for a in A[:3]:
        await (await connect(server, a)).close()
    assert "429" in await handshake_refused(server, A[3])
    await connect(server, B1)
    pinned = server.service.abuse_keys._conns  # keys with open connections in the key table
    await until(lambda: KEY_A not in pinned)  # the refused handshake let go of it too
    assert list(pinned) == ["2001:db8:1:3::/64"]
    for a in A[:3]:
        assert (await http_get(server, a))[0] == 200
    code, body = await http_get(server, A[3])
    assert code == 429 and b"too many requests" in body
    assert (await http_get(server, B1))[0] == 200


@pytest.mark.parametrize("engine_name", ["memory"])  # key derivation only: engine-independent
@pytest_twisted.ensureDeferred
async def test_trusted_proxy_forwarded_ipv6_gives_the_same_keys(make_server):
    server = await start(make_server, max_connections_per_ip=3, trusted_proxies=f"{PROXY}/128")

    def via_proxy(client_address: str) -> dict[str, dict[str, str]]:
        return {"headers": {"X-Forwarded-For": f"{client_address}, {PROXY}"}}

    direct = await connect(server, A[0])
    proxied = [await connect(server, PROXY, **via_proxy(a)) for a in A[1:3]]
    assert [session_of(server, c).ip for c in proxied] == A[1:3]
    assert {session_of(server, c).abuse_key for c in (direct, *proxied)} == {KEY_A}
    await refused(server, PROXY, "TOO_MANY_CONNECTIONS", **via_proxy(A[3]))  # 4th of the /64
    other = await connect(server, PROXY, **via_proxy(B1))
    assert session_of(server, other).abuse_key == "2001:db8:1:3::/64"
    mapped = await connect(server, PROXY, **via_proxy("::ffff:203.0.113.9"))
    assert session_of(server, mapped).abuse_key == "203.0.113.9"
    # a forged header from a peer that is not a trusted proxy changes nothing
    forged = await connect(server, C1, headers={"X-Forwarded-For": B1})
    assert session_of(server, forged).abuse_key == "2001:db8:2:1::/64"
    # a ban of the /64 refuses a forwarded address of it, and kicks the one connected
    await server.engine.ban("ips", "2001:db8:1:3::/64", "Spam", None)
    await refused(server, PROXY, "BANNED", **via_proxy("2001:db8:1:3::beef"))
    assert (await other.expect("error", timeout=3))["data"]["code"] == "BANNED"


@pytest.mark.parametrize("engine_name", ["memory"])  # the table is per instance, on any engine
@pytest_twisted.ensureDeferred
async def test_new_networks_get_503_while_the_key_table_is_full(make_server):
    server = await start(make_server, max_abuse_keys=2, rate_limit=100)
    await connect(server, A[0])
    await connect(server, B1)
    assert "503" in await handshake_refused(server, C1)  # a third network: refused
    code, body = await http_get(server, C1)
    assert code == 503 and b"too many client networks" in body
    await connect(server, A[1])  # known networks go on, from any of their addresses
    code, body = await http_get(server, A[2], "/stats")
    assert code == 200
    keys = json.loads(body)["instance"]["abuseKeys"]
    assert keys == {"tracked": 2, "cap": 2, "refused": 2}


async def until(condition, timeout: float = 5.0) -> None:
    deadline = reactor.seconds() + timeout
    while not condition():
        assert reactor.seconds() < deadline, "condition never became true"
        await task.deferLater(reactor, 0.02, lambda: None)


async def _maybe(value):
    """A console helper's answer: the value, or the Deferred's result (redis engine)."""
    if hasattr(value, "addCallback"):
        return await value
    return value
