"""Session resume over real sockets (docs/protocol.md "Session resume"): a client whose TCP
connection is cut without a close frame while its partner keeps sending comes back on a new
connection from another source address, on both engines; with Redis also on another instance
than the one it left, its partner on either of them or on a third.  The grace rules and the
replay details are tested on a clock in tests/test_resume_core.py."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from anygle.engine.redis.handover import CLAIM_TIMEOUT
from tests.conftest import ServerHandle
from tests.harness import eventually, sleep
from tests.wsclient import Client, match

pytestmark = pytest.mark.slow  # a stream of messages across a cut: a second or two each


def token_of(client: Client) -> str:
    frame = next(f for f in reversed(client.received) if f["type"] in ("connected", "resumed"))
    token: str = frame["data"]["resumeToken"]
    return token


async def got(client: Client, kind: str, timeout: float = 10.0) -> None:
    """``client`` received a ``kind`` frame (whatever else it got meanwhile)."""
    await eventually(lambda: any(f["type"] == kind for f in client.received), timeout=timeout)


def contents(client: Client) -> list[str]:
    return [f["data"]["content"] for f in client.received if f["type"] == "message"]


class Sender:
    """Sends numbered messages every 20 ms until stopped (what it sent, in order)."""

    def __init__(self, client: Client, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        self.sent: list[str] = []
        self.loop = task.LoopingCall(self.tick)
        self.loop.clock = reactor

    def tick(self) -> None:
        text = f"{self.prefix} {len(self.sent)}"
        self.client.send("message", {"content": text})
        self.sent.append(text)

    def start(self) -> None:
        self.loop.start(0.02)

    def stop(self) -> None:
        self.loop.stop()


async def cut_and_resume(a: Client, b: Client, port: int) -> tuple[Client, dict[str, Any]]:
    """Cut ``a`` while ``b`` keeps sending; resume on ``port`` from 127.0.0.2.  Checks that
    ``a`` then its successor got every message of ``b`` once, in order."""
    sender = Sender(b, "from b")
    sender.start()
    await sleep(0.2)
    last = next((f["data"]["id"] for f in reversed(a.received) if f["type"] == "message"), None)
    token = token_of(a)
    a.drop()  # an abort: no close frame, the server sees a reset
    await b.expect("partner_away", timeout=10)
    await sleep(0.3)  # b goes on sending to a user who is away
    c = await Client.connect(port, bind="127.0.0.2")
    c.send("resume", {"token": token, "lastMessageId": last})
    resumed = (await c.expect("resumed", timeout=10))["data"]
    await b.expect("partner_back", timeout=10)
    await sleep(0.2)
    sender.stop()

    def streamed() -> list[str]:
        return [m for m in contents(a) + contents(c) if m.startswith(sender.prefix)]

    await eventually(
        lambda: len(streamed()) >= len(sender.sent),
        timeout=10,
        what="every message of b at a or at its new connection",
    )
    assert streamed() == sender.sent  # each once, in order
    return c, resumed


async def chat_goes_on(c: Client, b: Client) -> None:
    c.send("message", {"content": "back on a new connection"})
    b.send("message", {"content": "welcome back"})
    await eventually(
        lambda: (
            contents(b)[-1:] == ["back on a new connection"]
            and contents(c)[-1:] == ["welcome back"]
        ),
        what="a message each way",
    )


@pytest_twisted.ensureDeferred
async def test_a_cut_client_resumes_from_another_address_and_misses_nothing(server):
    a, b = await server.pair()
    user = a.user_id
    c, resumed = await cut_and_resume(a, b, server.ws_port)
    assert resumed["userId"] == user and resumed["state"] == "chatting"
    await chat_goes_on(c, b)
    assert server.hub.sessions[user].ip == "127.0.0.2"  # limits and bans follow the new address
    assert len(server.hub.sessions) == 2
    await c.close()
    await got(b, "partner_disconnected", timeout=3)  # a clean close ends it at once


@pytest_twisted.ensureDeferred
async def test_expired_reused_and_forged_tokens_fail(make_server):
    server = await make_server(resume_grace=1)
    a, b = await server.pair()
    token = token_of(a)
    a.drop()
    c = await server.client()
    c.send("resume", {"token": token, "lastMessageId": None})
    await c.expect("resumed")
    await b.expect("partner_away")
    await b.expect("partner_back")
    reused = await server.client()
    reused.send("resume", {"token": token, "lastMessageId": None})
    await reused.error("RESUME_FAILED")
    forged = await server.client()
    forged.send("resume", {"token": "A" * len(token), "lastMessageId": None})
    await forged.error("RESUME_FAILED")
    token = token_of(c)
    c.drop()
    await b.expect("partner_away")
    await b.expect("partner_disconnected", timeout=5)  # the grace (1 s) is over
    late = await server.client()
    late.send("resume", {"token": token, "lastMessageId": None})
    await late.error("RESUME_FAILED")
    late.join()  # the connection is a session of its own
    await late.expect("searching")


# where a (who is cut and resumes on instance 1) and its partner b are, on instances 0..2
LAYOUTS = {
    "partner-stays-on-the-old-instance": (0, 0),
    "resume-onto-the-partners-instance": (0, 1),
    "partner-on-a-third-instance": (0, 2),
}


@pytest.mark.parametrize("engine_name", ["redis"], indirect=True)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest_twisted.ensureDeferred
async def test_resume_on_another_instance(make_server, layout):
    servers: list[ServerHandle] = [await make_server() for _ in range(3)]
    where_a, where_b = LAYOUTS[layout]
    a = await servers[where_a].client()
    b = await servers[where_b].client()
    await match(a, b)
    user = a.user_id
    b.send("message", {"content": "before the cut"})
    await a.expect("message")
    a.send("message", {"content": "sent before", "id": "c1"})
    await b.expect("message")
    c, resumed = await cut_and_resume(a, b, servers[1].ws_port)
    assert resumed["userId"] == user and resumed["state"] == "chatting"
    assert resumed["lastClientId"] == "c1"
    c.send("message", {"content": "sent before", "id": "c1"})  # resent: dropped
    await chat_goes_on(c, b)
    assert user in servers[1].hub.sessions and user not in servers[0].hub.sessions
    assert servers[1].engine.counters["resumes_claimed"] == 1
    assert servers[0].engine.counters["sessions_handed_over"] == 1
    stats = await servers[2].hub.stats()
    assert (stats.total_online, stats.active_chats) == (2, 1)
    token = token_of(c)
    b.received.clear()
    c.drop()  # and once more, back to the first instance
    await got(b, "partner_away")
    d = await Client.connect(servers[0].ws_port)
    d.send("resume", {"token": token, "lastMessageId": None})
    assert (await d.expect("resumed", timeout=10))["data"]["userId"] == user
    await got(b, "partner_back")
    await chat_goes_on(d, b)
    await d.close()
    await got(b, "partner_disconnected")
    stats = await servers[2].hub.stats()
    assert (stats.total_online, stats.active_chats) == (1, 0)
    for client in (b, c, d):
        await client.close()


@pytest.mark.parametrize("engine_name", ["redis"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_resume_when_the_old_instance_died(make_server):
    """The instance that held the session is killed: a resume elsewhere fails (at once when its
    lease is gone, else after the claim's wait for a handover that cannot come), the partner is
    told, and the new connection goes on as a session of its own."""
    dying, living = await make_server(), await make_server()
    a = await dying.client()
    b = await living.client()
    await match(a, b)
    token = token_of(a)
    dying.engine.halt()  # as kill -9: no lease renewal, no clean-up in Redis
    for proto in list(dying.service.factory.connections):
        proto.transport.abortConnection()
    c = await Client.connect(living.ws_port, bind="127.0.0.2")
    started = reactor.seconds()
    c.send("resume", {"token": token, "lastMessageId": None})
    await c.error("RESUME_FAILED", timeout=15)
    assert reactor.seconds() - started < CLAIM_TIMEOUT + 2
    await got(b, "partner_disconnected")
    c.join()
    await c.expect("searching")
    await c.close()
    await b.close()
