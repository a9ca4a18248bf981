"""The redis engine driven directly (no hub, no sockets) against a real ``redis-server``.

Several engines in one reactor play several instances.  That both engines make the same matches
is ``tests/test_engines_differential.py``.
"""

from __future__ import annotations

import json

import msgpack
import pytest
import pytest_twisted
from twisted.internet import reactor, task

from anygle.engine.base import EngineConfig, EngineUnavailable
from anygle.engine.memory import MemoryEngine
from anygle.engine.redis import QUEUES, RedisEngine
from tests.conftest import Sink, inbox_read, matched_across, now, prefs
from tests.harness import RedisServer, eventually, sleep


@pytest_twisted.ensureDeferred
async def test_same_instance_match_relay_and_leave(engines, redis: RedisServer):
    e, sink = await engines("a")
    assert e.health() == (True, "ok")
    await e.connect("u1", "10.0.0.1")
    await e.connect("u2", "10.0.0.2")
    assert await e.join("u1", prefs(), now()) is None
    m = await e.join("u2", prefs(), now())
    assert m is not None and (m.initiator, m.responder) == ("u1", "u2")
    assert [ev[1] for ev in sink.of("matched")] == ["u1", "u2"]
    stats = await e.stats()
    assert (stats.total_online, stats.active_chats, stats.total_matches, stats.in_queue) == (
        2,
        1,
        1,
        0,
    )
    # relay: synchronous, no Redis
    e.relay("u2", m.room_id, {"type": "message", "data": {"content": "hi"}})
    assert sink.of("relay", "u2")[-1][3]["data"]["content"] == "hi"
    assert e.counters["relayed_local"] == 1
    # the seed's keys
    room = redis.command("GET", f"room:{m.room_id}")
    assert room is not None and b'"initiator":"u1"' in room
    assert 1700 < redis.command("TTL", f"room:{m.room_id}") <= 1800
    assert redis.command("HGET", "stats:global", "activeChats") == b"1"
    assert b'"state":"chatting"' in redis.command("GET", "user:u1")
    assert await e.leave_room("u1", "skipped") == "u2"
    assert sink.of("left") == [("left", "u2", m.room_id, "skipped")]
    assert await e.leave_room("u2", "skipped") is None
    assert redis.command("GET", f"room:{m.room_id}") is None
    # cooldown: the pair is kept apart
    assert await e.join("u1", prefs(), now()) is None
    assert await e.join("u2", prefs(), now()) is None
    assert (await e.stats()).in_queue == 2
    await e.disconnect("u1")
    await e.disconnect("u2")
    stats = await e.stats()
    assert (stats.total_online, stats.active_chats, stats.in_queue) == (0, 0, 0)
    assert redis.command("HGET", "stats:global", "online") == b"0"
    assert redis.command("HLEN", "waiting") == 0


@pytest_twisted.ensureDeferred
async def test_cross_instance_match_relay_in_order_and_partner_left(engines, redis):
    a, sa, b, sb, m = await matched_across(engines, interests=(("music",), ("music", "art")))
    assert m.initiator == "ua" and m.shared_interests == ("music",)
    ma, mb = sa.of("matched")[0][2], sb.of("matched")[0][2]
    assert (ma.room_id, ma.initiator, ma.interests) == (mb.room_id, mb.initiator, mb.interests)
    for i in range(200):
        a.relay("ub", m.room_id, {"type": "message", "data": {"n": i}})
        b.relay("ua", m.room_id, {"type": "message", "data": {"n": i}})
    await eventually(lambda: len(sb.of("relay")) == 200 and len(sa.of("relay")) == 200)
    assert [ev[3]["data"]["n"] for ev in sb.of("relay")] == list(range(200))
    assert [ev[3]["data"]["n"] for ev in sa.of("relay")] == list(range(200))
    # messages sent just before a skip arrive before partner_skipped
    a.relay("ub", m.room_id, {"type": "message", "data": {"n": "last"}})
    assert await a.leave_room("ua", "skipped") == "ub"
    await eventually(lambda: sb.of("left"))
    kinds = [ev[0] for ev in sb.events]
    assert kinds[-2:] == ["relay", "left"] and sb.events[-2][3]["data"]["n"] == "last"
    assert sb.of("left") == [("left", "ub", m.room_id, "skipped")]
    assert await b.leave_room("ub", "skipped") is None
    await inbox_read(redis, a, sa, "ua")
    await inbox_read(redis, b, sb, "ub")
    assert len(sb.of("left")) == 1 and not sa.of("left")


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_both_skip_at_once_room_ends_once(engines, redis):
    a, sa = await engines("a")
    b, sb = await engines("b")
    for _ in range(20):
        await a.connect("x", "1.1.1.1")
        await b.connect("y", "2.2.2.2")
        await a.join("x", prefs(), now())
        m = await b.join("y", prefs(), now())
        room_id = m.room_id
        await eventually(lambda: [e for e in sa.of("matched", "x") if e[2].room_id == room_id])  # noqa: B023
        r1, r2 = a.leave_room("x", "disconnected"), b.leave_room("y", "disconnected")
        results = [await r1, await r2]
        assert sorted(r is None for r in results) == [False, True]
        await inbox_read(redis, a, sa, "x")
        await inbox_read(redis, b, sb, "y")
        lefts = [ev for ev in sa.of("left") + sb.of("left") if ev[2] == m.room_id]
        assert len(lefts) <= 1  # the loser already left by itself: nobody told twice
        await a.disconnect("x")
        await b.disconnect("y")
    stats = await a.stats()
    assert (stats.active_chats, stats.total_online) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_interest_fallback_interests_only_and_oldest_first(engines):
    e, sink = await engines("a", interest_timeout=0.3)
    for u in ("p", "q", "r", "s", "t"):
        await e.connect(u, "1.1.1.1")
    t0 = now()
    assert await e.join("p", prefs(("chess",)), t0) is None
    assert await e.join("q", prefs(("golf",), only=True), t0 + 0.01) is None
    assert await e.join("r", prefs(("tennis",)), t0 + 0.02) is None
    assert await e.tick(t0 + 0.1) == 0
    # after the timeout p and r are open (q is interestsOnly): the oldest two meet
    assert await e.tick(t0 + 0.35) == 1
    (m,) = [ev[2] for ev in sink.of("matched", "p")]
    assert (m.initiator, m.responder, m.shared_interests) == ("p", "r", ())
    assert (await e.stats()).in_queue == 1
    # q only takes golf
    assert await e.join("s", prefs(), t0 + 0.4) is None
    assert await e.tick(t0 + 5) == 0
    m2 = await e.join("t", prefs(("golf", "x")), t0 + 5)
    assert m2 is not None and {m2.initiator, m2.responder} == {"q", "t"}
    assert m2.shared_interests == ("golf",)


@pytest_twisted.ensureDeferred
async def test_prefers_most_shared_interests(engines):
    e, _sink = await engines("a")
    for u in ("a1", "a2", "a3", "me"):
        await e.connect(u, "1.1.1.1")
    t0 = now()
    await e.join("a1", prefs(("a",), only=True), t0)
    await e.join("a2", prefs(("b", "c"), only=True), t0 + 0.01)
    await e.join("a3", prefs(("d", "e"), only=True), t0 + 0.02)
    m = await e.join("me", prefs(("e", "d", "c", "b", "a")), t0 + 0.03)
    assert m.initiator == "a2" and m.shared_interests == ("b", "c")


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_instance_death_partners_told_and_queue_cleaned(engines, redis):
    a, sa = await engines("a")
    b, _sb = await engines("b")
    await a.connect("alive", "1.1.1.1")
    await b.connect("doomed", "2.2.2.2")
    await b.connect("waiter", "2.2.2.3")
    await b.join("doomed", prefs(), now())
    m = await a.join("alive", prefs(), now())
    assert m is not None
    await b.join("waiter", prefs(("rare",), only=True), now())
    # b "dies": no more heartbeats, connections gone, nothing cleaned up
    b.halt()
    await eventually(lambda: sa.of("left"), timeout=5, what="partner told within 5 s")
    assert sa.of("left") == [("left", "alive", m.room_id, "disconnected")]
    assert redis.command("HLEN", "waiting") == 0
    assert redis.command("SISMEMBER", "instances", "b") == 0
    stats = await a.stats()
    assert (stats.total_online, stats.active_chats, stats.in_queue) == (1, 0, 0)
    assert redis.command("HGET", "stats:global", "online") == b"1"


@pytest_twisted.ensureDeferred
async def test_clean_stop_removes_users_at_once(engines, redis):
    a, sa, b, _sb, m = await matched_across(engines)
    await b.connect("uw", "2.2.2.3")
    await b.join("uw", prefs(("z",), only=True), now())
    await b.stop()
    await eventually(lambda: sa.of("left"), timeout=1, what="partner told at once")
    assert sa.of("left")[0][2] == m.room_id
    assert redis.command("HLEN", "waiting") == 0
    assert (await a.stats()).total_online == 1


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_redis_outage_local_chat_goes_on_and_matching_resumes(engines, redis):
    a, sa = await engines("a")
    b, _sb = await engines("b")
    for u in ("l1", "l2", "w"):
        await a.connect(u, "1.1.1.1")
    await b.connect("r1", "2.2.2.2")
    await a.join("l1", prefs(), now())
    local = await a.join("l2", prefs(), now())
    await a.join("w", prefs(("wait",), only=True), now())
    a.register_batch = a.reap_batch = 2  # several script calls each
    redis.kill()
    await eventually(lambda: not a.health()[0])
    _ok, reason = a.health()
    assert reason.startswith("redis unavailable")
    with pytest.raises(EngineUnavailable):
        await b.join("r1", prefs(), now())
    a.relay("l2", local.room_id, {"type": "message", "data": {"x": 1}})
    assert sa.of("relay", "l2")
    assert await a.tick(now()) == 0
    await sleep(1.0)  # the outage lasts: reconnects fail a few times
    redis.start()
    await eventually(lambda: a.health()[0] and b.health()[0], timeout=5, what="both back")
    a.relay("l1", local.room_id, {"type": "message", "data": {"x": 2}})
    assert sa.of("relay", "l1")
    # state was rebuilt: the local room, the waiting user, online counts
    stats = await a.stats()
    assert (stats.total_online, stats.active_chats, stats.in_queue) == (4, 1, 1)
    m = await b.join("r1", prefs(("wait",)), now())
    assert m is not None and {m.initiator, m.responder} == {"w", "r1"}
    await eventually(lambda: sa.of("matched", "w"))


@pytest_twisted.ensureDeferred
async def test_disconnect_during_outage_is_put_right_on_reconnect(engines, redis):
    a, _sa, b, sb, m = await matched_across(engines)
    await a.connect("ua2", "1.1.1.1")
    # only a loses Redis (its connections are cut and come back)
    a.drop_connections()
    await eventually(lambda: not a.health()[0])
    await a.disconnect("ua")
    await eventually(lambda: a.health()[0], timeout=6)
    await eventually(lambda: sb.of("left"), timeout=3)
    assert sb.of("left") == [("left", "ub", m.room_id, "disconnected")]
    assert (await b.stats()).total_online == 2


@pytest_twisted.ensureDeferred
async def test_counters_and_bans(engines, redis):
    a, _sa = await engines("a")
    b, sb = await engines("b")
    assert await a.incr("msg:1.2.3.4", 10) == 1
    assert await b.incr("msg:1.2.3.4", 10) == 2
    assert await a.get_count("msg:1.2.3.4") == 2
    assert await a.get_count("nothing") == 0
    assert 9000 < redis.command("PTTL", "count:msg:1.2.3.4") <= 10000
    assert await a.get_ban("u", "9.9.9.9") is None
    await a.ban("ips", "9.9.9.9", "spam", None)
    assert redis.command("GET", "banned:ips:9.9.9.9") == b"spam"
    assert redis.command("TTL", "banned:ips:9.9.9.9") == -1
    assert await b.get_ban("u", "9.9.9.9") == "spam"
    await b.connect("victim", "5.5.5.5")
    await a.ban("users", "victim", "abuse", 60)
    assert 50 < redis.command("TTL", "banned:users:victim") <= 60
    assert await b.get_ban("victim", "5.5.5.5") == "abuse"
    await eventually(lambda: sb.of("kick"))
    assert sb.of("kick") == [("kick", "victim", "BANNED", "abuse")]
    assert await a.unban("users", "victim") is True
    assert await a.unban("users", "victim") is False
    redis.command("SETEX", "banned:users:v2", 100, "by hand")
    assert await a.get_ban("v2", None) == "by hand"


@pytest_twisted.ensureDeferred
async def test_queue_status_and_avg_match_time(engines):
    e, _sink = await engines("a")
    for u in ("q1", "q2", "q3"):
        await e.connect(u, "1.1.1.1")
    t0 = now()
    await e.join("q1", prefs(("a",), only=True), t0)
    await e.join("q2", prefs(("b",), only=True), t0 + 0.001)
    status = await e.queue_status(["q1", "q2", "nobody"])
    assert status == {"q1": (1, 0.0), "q2": (2, 0.0)}
    await e.join("q3", prefs(("a",)), t0 + 0.5)
    stats = await e.stats()
    assert stats.avg_match_time == 250.0 and stats.queues == {"adult:text:moderated": 1}
    assert (await e.queue_status(["q2"]))["q2"][1] == 250.0


def test_queue_names_match_preferences():
    assert prefs().queue in QUEUES and len(QUEUES) == 12
    assert msgpack.unpackb(msgpack.packb(("r", "u", "room", {"type": "x"}))) == [
        "r",
        "u",
        "room",
        {"type": "x"},
    ]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_check_bans_rate_and_connection_counts(engines, redis):
    a, _sa = await engines("a")
    b, _sb = await engines("b")
    redis.command("SET", "banned:ips:6.6.6.6", "bad ip")
    redis.command("SET", "banned:users:u2", "bad user")
    users = {f"u{i}": f"10.0.{i // 250}.{i % 250}" for i in range(1200)}
    users["u1"] = "6.6.6.6"
    assert await a.check_bans(users) == {"u1": "bad ip", "u2": "bad user"}
    # GCRA shared by both instances: 5 per second, bursts of 5
    allowed = [await (a if i % 2 else b).rate("join:1.2.3.4", 5, 1.0) for i in range(8)]
    assert allowed == [True] * 5 + [False] * 3
    # connections per IP over all instances
    assert await a.acquire_connection("7.7.7.7", 3)
    assert await b.acquire_connection("7.7.7.7", 3)
    assert await b.acquire_connection("7.7.7.7", 3)
    assert not await a.acquire_connection("7.7.7.7", 3)
    await a.release_connection("7.7.7.7")
    assert redis.command("GET", "conns:7.7.7.7") == b"2"
    # b dies: its two connections are given back by the reaper
    b.halt()
    await eventually(lambda: redis.command("GET", "conns:7.7.7.7") is None, timeout=6)
    assert await a.acquire_connection("7.7.7.7", 1)


@pytest_twisted.ensureDeferred
async def test_ttls_are_refreshed_while_connected_and_active(engines, redis):
    e, _sink = await engines("a")
    e.touch_interval = 0.5
    await e.connect("t1", "1.1.1.1")
    await e.connect("t2", "1.1.1.1")
    await e.join("t1", prefs(), now())
    m = await e.join("t2", prefs(), now())
    sid = json.loads(redis.command("GET", "user:t1"))["socketId"]
    for key in ("user:t1", f"socket:{sid}", f"room:{m.room_id}"):
        redis.command("EXPIRE", key, 100)
    await eventually(lambda: redis.command("TTL", "user:t1") > 3000, what="session touched")
    assert redis.command("TTL", f"socket:{sid}") > 3000
    assert redis.command("TTL", f"room:{m.room_id}") <= 100  # touched, but no activity yet
    e.relay("t2", m.room_id, {"type": "message"})
    await eventually(lambda: redis.command("TTL", f"room:{m.room_id}") > 1700, what="room touched")
    assert b'"lastActivity"' in redis.command("GET", f"room:{m.room_id}")


@pytest_twisted.ensureDeferred
async def test_late_relay_does_not_recreate_a_reaped_inbox(engines, redis):
    a, _sa, b, _sb, m = await matched_across(engines)  # a learns of the room through its inbox
    assert redis.command("EXISTS", "inbox:a") == 1 and redis.command("EXISTS", "inbox:b") == 1
    # b dies and is reaped (the reaper deletes its inbox) while a still holds the room
    b.halt()
    redis.command("DEL", "inbox:b")
    a.relay("ub", m.room_id, {"type": "message"})
    assert a.counters["relayed_remote"] == 1
    await a.incr("probe", 10)  # a script: flushes the outbox first, answered after the XADD
    assert redis.command("EXISTS", "inbox:b") == 0


@pytest_twisted.ensureDeferred
async def test_join_refuses_a_banned_user_atomically(engines, redis):
    e, sink = await engines("a")
    await e.connect("bu", "8.8.8.8")
    await e.connect("ok", "9.9.9.9")
    assert await e.check_bans({"bu": "8.8.8.8", "ok": "9.9.9.9"}) == {}
    redis.command("SET", "banned:ips:8.8.8.8", "spam")
    # the poll answered a moment ago: get_ban reuses it, join checks for itself
    assert await e.get_ban("bu", "8.8.8.8") is None
    assert await e.get_ban(None, "8.8.8.8") == "spam"
    assert await e.join("bu", prefs(), now()) is None
    assert sink.of("kick") == [("kick", "bu", "BANNED", "banned: spam")]
    assert redis.command("HLEN", "waiting") == 0
    assert await e.check_bans({"bu": "8.8.8.8", "ok": "9.9.9.9"}) == {"bu": "spam"}
    assert await e.get_ban("bu", "8.8.8.8") == "spam"


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_stalled_redis_is_noticed_and_survived(engines, redis):
    e, _sink = await engines("a")
    await e.connect("s1", "1.1.1.1")
    redis.command("CLIENT", "PAUSE", 6000, "ALL")
    d = e.stats()
    d.addErrback(lambda f: f.trap(EngineUnavailable))
    await eventually(lambda: not e.health()[0], timeout=5.5, what="stall noticed")
    await d
    await eventually(lambda: e.health()[0], timeout=10)
    assert (await e.stats()).total_online == 1


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_big_dead_instance_is_reaped_in_batches(engines, redis):
    a, sa = await engines("a")
    b, _sb = await engines("b")
    b.liveness.reap_batch = a.liveness.reap_batch = 7
    b.register_batch = 5
    for i in range(40):
        await b.connect(f"b{i}", "2.2.2.2")
    for i in range(3):
        await a.connect(f"a{i}", "1.1.1.1")
        await b.join(f"b{i}", prefs(), now())
        await a.join(f"a{i}", prefs(), now())
    for i in range(3, 20):
        await b.join(f"b{i}", prefs((f"x{i}",), only=True), now())
    assert (await a.stats()).total_online == 43
    b.halt()
    await eventually(lambda: len(sa.of("left")) == 3, timeout=5, what="partners told in 5 s")
    await eventually(lambda: redis.command("SISMEMBER", "instances", "b") == 0, timeout=3)
    stats = await a.stats()
    assert (stats.total_online, stats.active_chats, stats.in_queue) == (3, 0, 0)
    assert redis.command("HGET", "stats:global", "online") == b"3"


@pytest_twisted.ensureDeferred
async def test_changes_made_while_starting_reach_redis(redis):
    e = RedisEngine(EngineConfig(instance_id="early", redis_url=redis.url), reactor)
    sink = Sink()
    started = e.start(sink)
    try:
        # the hub may take connections before the first registration: they wait for it
        c1, c2 = e.connect("e1", "1.1.1.1"), e.connect("e2", "1.1.1.1")
        gone = e.disconnect("e2")
        assert not e.health()[0]
        await c1
        await c2
        await gone
        await started
        assert e.health()[0]
        assert redis.command("SMEMBERS", "instance:early:users") == [b"e1"]
        assert (await e.stats()).total_online == 1
        assert await e.join("e1", prefs(), now()) is None
    finally:
        await e.stop()
    assert redis.command("HGET", "stats:global", "online") == b"0"


@pytest_twisted.ensureDeferred
async def test_a_connection_blip_without_local_changes_keeps_cross_instance_chats(engines):
    a, sa, b, sb, m = await matched_across(engines)
    a.stats()  # in flight when the connection drops: harmless (read only)
    a.drop_connections()
    await eventually(lambda: not a.health()[0])
    await eventually(lambda: a.health()[0], timeout=6)
    assert a.counters["resyncs"] == 1  # the start only
    a.relay("ub", m.room_id, {"type": "message", "data": "after the blip"})
    b.relay("ua", m.room_id, {"type": "message", "data": "me too"})
    await eventually(lambda: sb.of("relay") and sa.of("relay"))
    assert not sa.of("left") and not sb.of("left")


@pytest_twisted.ensureDeferred
async def test_events_overtaking_their_matched_are_held_back(engines, redis):
    a, sa = await engines("a")
    await a.connect("ua", "1.1.1.1")

    def inbox(*event: object) -> None:
        redis.command("XADD", "inbox:a", "*", "b", msgpack.packb([list(event)]))

    # the partner's message and its disconnect reach us (inbox) before our join's reply
    inbox("r", "ua", "R1", {"type": "message", "data": "early"})
    inbox("l", "ua", "R1", "disconnected")
    await eventually(lambda: a.counters["held"] == 2, what="both held")
    assert sa.events == []
    m = ["R1", "text", "ub", "ua", {"ub": [], "ua": []}, [], 1000, {"ub": "b", "ua": "a"}]
    inbox("m", m)
    await eventually(lambda: len(sa.events) == 3)
    assert [e[0] for e in sa.events] == ["matched", "relay", "left"]
    # late events of a room that ended here are dropped, not held
    inbox("r", "ua", "R1", {"type": "message", "data": "late"})
    await inbox_read(redis, a, sa, "ua")
    assert [e[0] for e in sa.events] == ["matched", "relay", "left", "kick"]
    assert a.counters["held"] == 2


@pytest.mark.parametrize("cls", [MemoryEngine, RedisEngine])
@pytest_twisted.ensureDeferred
async def test_cooldown_retry_at_the_first_cooldown_end(redis, cls):
    """Kept from two partners by cooldowns ending at 5 and 7 s: retried (and matched) at 5."""
    redis.command("FLUSHALL")
    clock = task.Clock()
    cfg = EngineConfig(instance_id="cd", redis_url=redis.url, rematch_cooldown=5.0)
    engine = MemoryEngine(cfg, clock) if cls is MemoryEngine else RedisEngine(cfg, clock, reactor)
    sink = Sink()
    await engine.start(sink)
    try:
        for u in ("s", "p1", "p2"):
            await engine.connect(u, "1.1.1.1")
        clock.advance(1000.0)
        await engine.join("p1", prefs(("x",), only=True), clock.seconds())
        await engine.join("s", prefs(("x", "y"), only=True), clock.seconds())
        assert await engine.leave_room("s", "skipped") == "p1"  # cooldown s/p1 until 1005
        clock.advance(2.0)
        await engine.join("p2", prefs(("y",), only=True), clock.seconds())
        await engine.join("s", prefs(("x", "y"), only=True), clock.seconds())
        assert await engine.leave_room("s", "skipped") == "p2"  # cooldown s/p2 until 1007
        clock.advance(0.5)
        wants = {"p1": ("x",), "p2": ("y",), "s": ("x", "y")}
        for u in ("p1", "p2", "s"):
            assert await engine.join(u, prefs(wants[u], only=True), clock.seconds()) is None
        clock.advance(2.0)  # 1004.5
        assert await engine.tick(clock.seconds()) == 0
        clock.advance(1.0)  # 1005.5: the s/p1 cooldown is over
        assert await engine.tick(clock.seconds()) == 1
        m = sink.of("matched")[-1][2]
        assert {m.initiator, m.responder} == {"s", "p1"}
    finally:
        await engine.stop()


def test_a_test_clock_alone_is_refused_not_left_to_hang():
    """Connections and the lease thread need a reactor; a bare Clock would never connect."""
    with pytest.raises(TypeError, match="pass reactor="):
        RedisEngine(EngineConfig(instance_id="c"), task.Clock())
    RedisEngine(EngineConfig(instance_id="c"), task.Clock(), reactor)


def test_instance_ids_cannot_collide_in_key_names():
    for bad in ("", "a:users", " a"):
        with pytest.raises(ValueError):
            RedisEngine(EngineConfig(instance_id=bad), reactor)


def test_redis_urls():
    from anygle.engine.redis import RedisAddress

    a = RedisAddress.parse("redis://:s%40cret@10.0.0.5:6380/3")
    assert (a.host, a.port, a.db, a.password, a.path) == ("10.0.0.5", 6380, 3, "s@cret", None)
    a = RedisAddress.parse("redis://127.0.0.1:6379/0")
    assert (a.host, a.port, a.db, a.password) == ("127.0.0.1", 6379, 0, None)
    a = RedisAddress.parse("unix:///run/redis/redis.sock?db=2")
    assert (a.path, a.db) == ("/run/redis/redis.sock", 2)
    with pytest.raises(ValueError):
        RedisAddress.parse("http://x")


@pytest_twisted.ensureDeferred
async def test_a_match_heard_again_after_its_room_ended_does_not_block_the_next_join(
    engines, redis: RedisServer
):
    """A late copy of a match (its room already ended) leaves the engine's idea of the user's
    room stale; the hub, which has the user out of any room, queues it again: the join must
    queue it, not fail (which the client would see as INTERNAL_ERROR)."""
    a, _, _, _, m = await matched_across(engines)
    assert await a.leave_room("ua", "skipped") == "ub"
    raw = [
        m.room_id,
        m.mode,
        m.initiator,
        m.responder,
        {k: list(v) for k, v in m.interests.items()},
        list(m.shared_interests),
        int(m.matched_at * 1000),
        {"ua": "a", "ub": "b"},
    ]
    a.local.apply_match(raw, None)  # heard again, late
    assert a.users["ua"].room == m.room_id
    assert await a.join("ua", prefs(), now()) is None
    assert a.users["ua"].room is None
    assert redis.command("HEXISTS", "waiting", "ua") == 1
