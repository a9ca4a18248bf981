"""Session resume on a clock (tests/memory.py): the grace period, what is replayed, the token
rules and the message ids.  The same over real sockets, on both engines and across instances, is
in tests/test_resume.py."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable

import pytest

from anygle.resume import AWAY_FRAMES, RESUME_ATTEMPTS
from tests.memory import MemoryClient, MemoryServer


@pytest.fixture
def make(make_memory_server: Callable[..., MemoryServer]) -> Callable[..., MemoryServer]:
    return make_memory_server


def token_of(client: MemoryClient) -> str:
    frames = client.of("connected", "resumed")
    assert frames, [f["type"] for f in client.received]
    token: str = frames[-1]["data"]["resumeToken"]
    return token


def contents(client: MemoryClient) -> list[str]:
    return [f["data"]["content"] for f in client.of("message")]


def resume(server: MemoryServer, token: str, last: str | None) -> MemoryClient:
    client = server.connect()
    client.send("resume", {"token": token, "lastMessageId": last})
    return client


def test_a_dropped_user_resumes_gets_what_it_missed_once_and_chats_on(make):
    server = make()
    a, b = server.pair()
    token, user, room = token_of(a), a.user_id, a.last("matched")["data"]["roomId"]
    b.send("message", {"content": "one"})
    last = a.last("message")["data"]["id"]
    a.frozen = True  # the network goes: "two" is sent to a but never read ...
    b.send("message", {"content": "two"})
    server.cut(a)  # ... and the connection is reset
    assert b.take()[-1:] == ["partner_away"]
    b.send("message", {"content": "three"})  # while a is away: kept for it
    b.send("typing", {"isTyping": True})  # not kept: stale by the time a is back
    server.advance(20.0)  # within the 30 s grace
    c = resume(server, token, last)
    resumed = c.last("resumed")["data"]
    assert resumed["userId"] == user and resumed["state"] == "chatting"
    assert resumed["roomId"] == room
    assert resumed["resumeToken"] != token and resumed["lastClientId"] is None
    after = [f["type"] for f in c.received]
    assert after[after.index("resumed") :] == ["resumed", "message", "message"]
    assert contents(c) == ["two", "three"]
    assert b.take() == ["partner_back"]
    c.send("message", {"content": "back again"})
    assert contents(b)[-1] == "back again"
    b.send("message", {"content": "welcome back"})
    assert contents(c)[-1] == "welcome back"
    assert len(server.hub.sessions) == 2  # the new connection's own session was dropped


def test_a_client_that_got_nothing_yet_gets_every_message(make):
    server = make()
    a, b = server.pair()
    token = token_of(a)
    a.frozen = True
    for text in ("hi", "are you there?"):
        b.send("message", {"content": text})
    server.cut(a)
    c = resume(server, token, None)
    assert contents(c) == ["hi", "are you there?"]


def test_the_grace_ends_the_session_and_the_token_with_it(make):
    server = make(resume_grace=10)
    a, b = server.pair()
    b.take()
    token = token_of(a)
    server.cut(a)
    server.advance(9.9)
    assert b.take() == ["partner_away"]
    server.advance(0.2)
    assert b.take() == ["partner_disconnected"]
    c = resume(server, token, None)
    assert c.last("error")["data"]["code"] == "RESUME_FAILED"
    c.join()  # the connection goes on as a session of its own
    assert c.of("searching")


def test_a_token_is_used_once_and_a_forged_one_fails(make):
    server = make()
    a, b = server.pair()
    b.take()
    token = token_of(a)
    server.cut(a)
    c = resume(server, token, None)
    assert c.of("resumed")
    server.cut(c)
    again = resume(server, token, None)  # the old token: used already
    assert again.last("error")["data"]["code"] == "RESUME_FAILED"
    forged = resume(server, token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), None)
    assert forged.last("error")["data"]["code"] == "RESUME_FAILED"
    d = resume(server, token_of(c), None)  # the rotated token works, once more
    assert d.last("resumed")["data"]["state"] == "chatting"
    assert b.take() == ["partner_away", "partner_back"] * 2


def test_resume_only_as_the_first_frame_and_only_after_a_drop(make):
    server = make()
    a, b = server.pair()
    b.take()
    c = server.connect()
    c.send("ping")
    c.send("resume", {"token": token_of(a), "lastMessageId": None})
    assert c.last("error")["data"]["code"] == "RESUME_FAILED"
    token = token_of(a)
    a.sendClose(1000)  # a clean close ends the session at once
    server.flush()
    assert b.take() == ["partner_disconnected"]
    late = resume(server, token, None)
    assert late.last("error")["data"]["code"] == "RESUME_FAILED"


def test_an_old_connection_still_open_is_closed_by_the_resume(make):
    server = make()
    a, b = server.pair()
    b.take()
    a.frozen = True  # the server has not noticed yet: no ping has timed out
    b.send("message", {"content": "lost in the old socket"})
    c = resume(server, token_of(a), None)
    assert contents(c) == ["lost in the old socket"]
    assert b.take() == []  # the partner never saw the user go
    a.frozen = False
    server.flush()
    assert a.close_code == 1000
    c.send("message", {"content": "still here"})
    assert contents(b)[-1] == "still here"


def test_a_resent_message_is_not_delivered_twice(make):
    server = make()
    a, b = server.pair()
    a.send("message", {"content": "first", "id": "m1"})
    a.send("message", {"content": "second", "id": "m2"})
    server.cut(a)
    c = resume(server, token_of(a), None)
    assert c.last("resumed")["data"]["lastClientId"] == "m2"
    c.send("message", {"content": "second", "id": "m2"})  # resent: unsure it arrived
    c.send("message", {"content": "third", "id": "m3"})
    assert contents(b) == ["first", "second", "third"]


def test_what_happens_while_away_is_replayed_in_order(make):
    server = make(rematch_cooldown=0)
    a, b = server.pair()
    server.cut(a)
    b.send("message", {"content": "bye"})
    b.send("skip")
    c = resume(server, token_of(a), None)
    assert c.last("resumed")["data"]["state"] == "idle"
    types = [f["type"] for f in c.received]
    assert types[types.index("resumed") :] == ["resumed", "message", "partner_skipped"]


def test_a_queued_user_matched_while_away_gets_the_match(make):
    server = make()
    a = server.connect()
    a.join()
    server.cut(a)
    b = server.connect()
    b.join()
    assert b.take() == ["connected", "matched", "partner_away"]
    c = resume(server, token_of(a), None)
    assert c.last("resumed")["data"]["state"] == "chatting"
    assert c.last("matched")["data"]["partnerId"] == b.user_id
    assert b.take() == ["partner_back"]


def test_too_much_for_an_away_user_ends_its_session(make):
    server = make(message_limits="off")
    a, b = server.pair()
    token = token_of(a)
    server.cut(a)
    for i in range(AWAY_FRAMES + 1):
        b.send("message", {"content": f"message {i}"})
    assert b.take()[-1] == "partner_disconnected"
    assert resume(server, token, None).last("error")["data"]["code"] == "RESUME_FAILED"


def test_a_ban_while_away_ends_the_session(make):
    server = make()
    a, b = server.pair()
    b.take()
    token, user = token_of(a), a.user_id
    server.cut(a)
    server.hub.engine.ban("users", user, "test", None)
    server.advance(1.5)  # the ban poll
    assert b.take() == ["partner_away", "partner_disconnected"]
    assert resume(server, token, None).last("error")["data"]["code"] == "RESUME_FAILED"


def test_resume_attempts_are_limited_per_address(make):
    server = make()
    codes = []
    for _ in range(RESUME_ATTEMPTS + 1):
        codes.append(resume(server, "no-such-token", None).last("error")["data"]["code"])
    assert codes == ["RESUME_FAILED"] * RESUME_ATTEMPTS + ["RATE_LIMITED"]


def test_repeated_drops_replay_nothing_twice(make):
    server = make()
    a, b = server.pair()
    client, got = a, []
    for round_ in range(4):
        b.send("message", {"content": f"before drop {round_}"})
        got += contents(client)
        last = client.last("message")["data"]["id"] if client.of("message") else None
        client.frozen = True
        b.send("message", {"content": f"unread {round_}"})  # sent, never read
        server.cut(client)
        b.send("message", {"content": f"while away {round_}"})
        client = resume(server, token_of(client), last)
    got += contents(client)
    sent = [f"{kind} {r}" for r in range(4) for kind in ("before drop", "unread", "while away")]
    assert got == sent


def test_an_ended_away_session_is_freed_by_reference_counting(make):
    """The garbage collector runs rarely on purpose (``tap.tune_gc``): an away session that a
    reference cycle kept after its grace stayed in memory until a full collection, which under
    churn of dropped phones grew the process in steps of tens of MB."""
    server = make()
    a, b = server.pair()
    b.send("message", {"content": "hi"})
    session = server.service.hub.sessions[a.user_id]
    freed = weakref.ref(session)
    del session
    gc.collect()
    gc.disable()
    try:
        server.cut(a)
        assert server.service.hub.sessions[a.user_id].away is not None
        server.advance(31.0)  # the grace runs out: the session ends
        assert a.user_id not in server.service.hub.sessions
        assert freed() is None
    finally:
        gc.enable()
