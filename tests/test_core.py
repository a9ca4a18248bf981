"""The core on a clock (tests/memory.py): protocol, hub, moderation and the memory engine, with no
socket and no real time.  Behaviours that depend on time (timeouts, cooldowns, pings, pushes)
live here, where "nothing happens until t" is checked by moving the clock to just before t; the
same behaviours over real sockets, on both engines, are in tests/test_behaviour.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from anygle.reports import REPORT_GRACE
from anygle.session import ENDED_ROOMS_KEPT, Session
from tests.memory import MemoryServer


@pytest.fixture
def make(make_memory_server: Callable[..., MemoryServer]) -> Callable[..., MemoryServer]:
    return make_memory_server


def test_join_match_chat_skip(make):
    server = make()
    a, b = server.connect(), server.connect()
    assert a.take() == ["connected"] and a.user_id
    a.join()
    assert a.take() == []  # alone in the queue
    b.join()  # matched at once, not at the next tick
    assert a.last("matched")["data"]["partnerId"] == b.user_id
    assert b.last("matched")["data"]["partnerId"] == a.user_id
    for i in range(5):
        a.send("message", {"content": f"m{i}"})
    assert [f["data"]["content"] for f in b.of("message")] == [f"m{i}" for i in range(5)]
    a.take(), b.take()
    a.send("skip")
    assert b.take() == ["partner_skipped"]
    assert a.take() == []  # back in the queue: nobody else is there


def test_interest_fallback_happens_at_the_timeout_and_not_before(make):
    server = make(interest_timeout=10.0)
    a, b = server.connect(), server.connect()
    a.join(interests=["knitting"])
    b.join(interests=["surfing"])
    server.advance(9.8)
    assert not a.of("matched") and not b.of("matched")
    server.advance(0.4)
    assert a.last("matched")["data"]["partnerInfo"]["sharedInterests"] == []
    assert b.last("matched")["data"]["partnerId"] == a.user_id


def test_interests_only_never_falls_back(make):
    server = make(interest_timeout=1.0)
    a, b = server.connect(), server.connect()
    a.join(interests=["knitting"], interestsOnly=True)
    b.join()
    server.advance(600.0, step=1.0)
    assert not a.of("matched") and not b.of("matched")
    c = server.connect()
    c.join(interests=["KNITTING"])
    server.advance(0.1)
    assert c.last("matched")["data"]["partnerId"] == a.user_id


def test_rematch_cooldown_keeps_a_skipped_pair_apart_until_it_ends(make):
    server = make(rematch_cooldown=30.0)
    a, b = server.pair()
    a.send("skip")
    b.send("skip")  # both search again, alone together
    a.take(), b.take()
    server.advance(29.8, step=0.5)
    assert a.take() == [] and b.take() == []
    server.advance(0.4)
    assert a.take() == ["matched"] and b.take() == ["matched"]


def test_searching_and_stats_are_pushed_on_their_intervals(make):
    server = make(searching_interval=3.0, stats_interval=5.0)
    a = server.connect()
    a.join()
    a.received.clear()
    server.advance(2.9)
    assert a.received == []
    server.advance(0.2)
    assert [f["type"] for f in a.received] == ["searching"]
    assert a.last("searching")["data"]["position"] == 1
    server.advance(2.0)
    assert [f["type"] for f in a.received] == ["searching", "stats"]
    assert a.last("stats")["data"]["inQueue"] == 1


def test_a_peer_that_stops_answering_pings_is_dropped_and_its_partner_told(make):
    server = make(ping_interval=10.0, ping_timeout=5.0)
    a, b = server.pair()
    b.take()
    server.advance(60.0, step=1.0)  # a live client answers the pings (Autobahn does) and stays
    assert a.user_id in server.hub.sessions and b.take() == []
    a.frozen = True  # its network is gone: no pongs, no close frame
    for _ in range(int((10.0 + 5.0) / 0.5) + 1):  # the next ping, then its timeout
        server.advance(0.5)
        if b.received:
            break
    assert b.take() == ["partner_away"]  # the session waits for a resume ...
    server.advance(29.0)
    assert b.take() == [] and a.user_id in server.hub.sessions
    server.advance(1.5)  # ... for the resume grace (30 s), then it ends
    assert b.take() == ["partner_disconnected"]
    assert a.user_id not in server.hub.sessions


def test_a_blocked_line_never_reaches_a_teen_partner(make):
    server = make()
    a, b = server.pair(age="teen")
    b.take()
    a.send("message", {"content": "whats ur snap? add me", "id": "m7"})
    assert b.of("message") == []
    warning = a.last("moderation_warning")["data"]
    assert warning["severity"] and warning["delivered"] is False and warning["id"] == "m7"


def test_the_estimated_wait_follows_recent_matches(make):
    server = make(searching_interval=1.0)
    a, b = server.connect(), server.connect()
    a.join()
    server.advance(20.0)  # a waits 20 s alone
    b.join()
    server.advance(0.1)
    assert a.of("matched")
    c = server.connect()
    c.join()
    server.advance(1.0)
    assert 9_000 <= c.last("searching")["data"]["estimatedTime"] <= 11_000  # ms: (20 s + 0) / 2


def test_the_message_rate_limit_refills_with_time(make):
    server = make(message_limits={"chat": (1.0, 3.0)})  # 1 a second, bursts of 3
    a, b = server.pair()
    for i in range(5):
        a.send("message", {"content": f"m{i}"})
    assert [f["data"]["content"] for f in b.of("message")] == ["m0", "m1", "m2"]
    assert [f["data"]["code"] for f in a.of("error")] == ["RATE_LIMITED", "RATE_LIMITED"]
    server.advance(0.9)
    a.send("message", {"content": "too soon"})
    server.advance(0.2)  # a second after the burst: one more
    a.send("message", {"content": "later"})
    assert b.last("message")["data"]["content"] == "later"


def test_a_partner_stays_reportable_for_the_grace_period_only(make):
    server = make()
    a, _ = server.pair()
    a.send("skip")
    server.advance(REPORT_GRACE - 1.0, step=1.0)
    a.send("report", {"reason": "spam"})
    assert a.take()[-1] == "report_received"
    other = make()
    c, d = other.pair()
    d.send("skip")
    other.advance(REPORT_GRACE + 1.0, step=1.0)
    c.send("report", {"reason": "spam"})
    assert c.last("error")["data"]["code"] == "NOT_IN_CHAT"


def test_a_ban_closes_a_connected_user_within_a_second(make):
    server = make()
    a, b = server.pair()
    c = server.connect()
    server.engine.ban("users", a.user_id or "", "Harassment", 86400)
    server.advance(1.0)  # the bans are enforced at least once a second
    error = a.last("error")["data"]
    assert error["code"] == "BANNED" and "Harassment" in error["message"]
    assert a.close_code == 1008
    assert "partner_disconnected" in b.take()
    server.engine.ban("ips", "127.0.0.1", "Spam", 60)  # every client here comes from it
    server.advance(1.0)
    assert c.last("error")["data"]["code"] == "BANNED" and c.close_code == 1008


def test_a_session_remembers_its_last_ended_rooms() -> None:
    """Rooms that ended before their match was heard: the last ``ENDED_ROOMS_KEPT``."""
    s = Session("u", "10.0.0.1", client=None)  # type: ignore[arg-type]
    assert not s.has_ended("r0")
    for i in range(ENDED_ROOMS_KEPT + 2):
        s.room_ended(f"r{i}")
    assert not s.has_ended("r0") and not s.has_ended("r1")
    assert all(s.has_ended(f"r{i}") for i in range(2, ENDED_ROOMS_KEPT + 2))
