"""The behavioural suite: the seed protocol through a real server, on every engine."""

from __future__ import annotations

import json

import msgpack
import pytest
import pytest_twisted

from tests.harness import eventually, sleep
from tests.wsclient import Client, Closed, match

# Behaviours that take time (timeouts, cooldowns, pushes, pings) are checked on a clock for the
# memory engine (tests/test_core.py, in milliseconds); over sockets only where the redis engine
# implements them again (its Lua scripts keep their own time).
REDIS_ONLY = pytest.mark.parametrize("engine_name", ["redis"], indirect=True)


@pytest_twisted.ensureDeferred
async def test_connected_carries_a_user_id(server):
    c = await server.client()
    assert isinstance(c.user_id, str) and len(c.user_id) >= 16
    other = await server.client()
    assert other.user_id != c.user_id


@pytest_twisted.ensureDeferred
async def test_join_then_searching_then_matched(server):
    a = await server.client()
    a.join(interests=["Music", "  movies ", "music"])
    s = await a.expect("searching")
    assert s["data"]["position"] == 1
    assert isinstance(s["data"]["estimatedTime"], int | float)
    b = await server.client()
    b.join(interests=["music"])
    ma, mb = (await a.expect("matched"))["data"], (await b.expect("matched"))["data"]
    assert ma["roomId"] == mb["roomId"]
    assert ma["partnerId"] == b.user_id and mb["partnerId"] == a.user_id
    assert ma["mode"] == mb["mode"] == "text"
    assert {ma["isInitiator"], mb["isInitiator"]} == {True, False}
    assert ma["partnerInfo"] == {"interests": ["music"], "sharedInterests": ["music"]}
    assert mb["partnerInfo"]["interests"] == ["music", "movies"]
    assert mb["partnerInfo"]["sharedInterests"] == ["music"]


@pytest_twisted.ensureDeferred
async def test_message_relay_in_order_both_ways(server):
    a, b = await server.pair()
    for i in range(50):
        a.send("message", {"content": f"a{i}"})
        b.send("message", {"content": f"b{i}"})
    got_b = [(await b.expect("message"))["data"] for _ in range(50)]
    got_a = [(await a.expect("message"))["data"] for _ in range(50)]
    assert [m["content"] for m in got_b] == [f"a{i}" for i in range(50)]
    assert [m["content"] for m in got_a] == [f"b{i}" for i in range(50)]
    for m in got_a + got_b:
        assert set(m) == {"id", "content", "timestamp"}
        assert isinstance(m["timestamp"], int) and m["timestamp"] > 1_600_000_000_000
    assert len({m["id"] for m in got_a + got_b}) == 100
    await a.quiet(0.2)  # the sender gets no echo
    await b.quiet(0.05)


@pytest_twisted.ensureDeferred
async def test_partner_events_and_signalling_are_relayed(server):
    a, b = await server.pair(mode="video")
    a.send("typing", {"isTyping": True})
    assert (await b.expect("partner_typing"))["data"] == {"isTyping": True}
    a.send("video_toggle", {"enabled": False})
    assert (await b.expect("partner_video_toggle"))["data"] == {"enabled": False}
    b.send("audio_toggle", {"enabled": True})
    assert (await a.expect("partner_audio_toggle"))["data"] == {"enabled": True}
    offer = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n", "extra": [1, 2]}
    a.send("offer", offer)
    assert (await b.expect("offer"))["data"] == offer
    answer = {"type": "answer", "sdp": "v=0\r\n"}
    b.send("answer", answer)
    assert (await a.expect("answer"))["data"] == answer
    cand = {
        "candidate": "candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    for _ in range(30):
        a.send("ice_candidate", cand)
    for _ in range(30):
        assert (await b.expect("ice_candidate"))["data"] == cand
    await a.quiet(0.1)


@pytest_twisted.ensureDeferred
async def test_ping_pong(server):
    c = await server.client()
    c.send("ping")
    pong = await c.expect("pong")
    assert abs(pong["data"]["timestamp"] - server.hub.now_ms()) < 5000


@pytest_twisted.ensureDeferred
async def test_skip_tells_partner_and_requeues_skipper_only(server):
    a, b = await server.pair()
    a.send("skip", {"reason": "bored"})
    await b.expect("partner_skipped")
    await a.expect("searching")
    # b is not requeued: a third user is matched with a, not b
    c = await server.client()
    c.join()
    assert (await c.expect("matched"))["data"]["partnerId"] == a.user_id
    await a.expect("matched")
    await b.quiet(0.2)
    b.send("message", {"content": "anyone?"})
    await b.error("NOT_IN_CHAT")


@pytest_twisted.ensureDeferred
async def test_skip_after_being_skipped_requeues(server):
    a, b = await server.pair()
    a.send("skip")
    await b.expect("partner_skipped")
    b.send("skip")  # "next" after the partner left: b searches again
    await b.expect("searching", "matched")


@pytest_twisted.ensureDeferred
async def test_skip_before_join_is_not_in_chat(server):
    c = await server.client()
    c.send("skip")
    await c.error("NOT_IN_CHAT")


@pytest_twisted.ensureDeferred
async def test_simultaneous_skips_leave_no_ghosts(make_server):
    server = await make_server(rematch_cooldown=60)
    a, b = await server.pair()
    a.send("skip")
    b.send("skip")
    # each is either told partner_skipped or not (the other skip won), and each searches again,
    # never with each other (cooldown), never twice
    for c in (a, b):
        await c.expect("searching", "partner_skipped")

    async def both_queued() -> bool:
        stats = await server.engine.stats()
        return stats.in_queue == 2 and stats.active_chats == 0

    await eventually(both_queued, what="both queued, no room")
    assert (await server.engine.queue_status([a.user_id, b.user_id])).keys() == {
        a.user_id,
        b.user_id,
    }


@pytest_twisted.ensureDeferred
async def test_disconnect_tells_partner_and_clears_queue(make_server):
    """A dropped connection (no close frame) keeps its session for the resume grace: the
    partner hears ``partner_away``, then ``partner_disconnected`` when the grace is over."""
    server = await make_server(resume_grace=0.5)
    a, b = await server.pair()
    a.drop()
    await b.expect("partner_away")
    await b.expect("partner_disconnected")
    c = await server.client()
    c.join()
    await c.expect("searching")
    await c.close()

    async def only_b_left() -> bool:
        stats = await server.engine.stats()
        return (stats.in_queue, stats.active_chats, stats.total_online) == (0, 0, 1)

    await eventually(only_b_left, what="queue and rooms empty, one user online")


@pytest_twisted.ensureDeferred
async def test_join_while_chatting_skips_and_requeues_with_new_prefs(server):
    a, b = await server.pair()
    a.join(mode="voice")
    await b.expect("partner_skipped")
    await a.expect("searching")
    c = await server.client()
    c.join(mode="voice")
    assert (await c.expect("matched"))["data"]["mode"] == "voice"
    await a.expect("matched")


@pytest_twisted.ensureDeferred
async def test_join_while_queued_replaces_the_entry(server):
    a = await server.client()
    a.join(mode="text")
    await a.expect("searching")
    a.join(mode="video")
    await a.expect("searching")
    stats = await server.engine.stats()
    assert stats.in_queue == 1
    b = await server.client()
    b.join(mode="text")
    await b.expect("searching")
    c = await server.client()
    c.join(mode="video")
    assert (await c.expect("matched"))["data"]["partnerId"] == a.user_id


@pytest_twisted.ensureDeferred
async def test_teens_and_adults_never_meet_nor_modes_mix(server):
    teen, adult = await server.client(), await server.client()
    teen.join(age="teen")
    adult.join(age="adult")
    await teen.expect("searching")
    await adult.expect("searching")
    video = await server.client()
    video.join(age="adult", mode="video")
    await video.expect("searching")
    unmod = await server.client()
    unmod.join(age="adult", queue="unmoderated")
    await unmod.expect("searching")
    await teen.quiet(0.3)
    teen2 = await server.client()
    teen2.join(age="teen")
    assert (await teen2.expect("matched"))["data"]["partnerId"] == teen.user_id
    await teen.expect("matched")
    await adult.quiet(0.05)


@pytest_twisted.ensureDeferred
async def test_teens_only_in_moderated_queue(server):
    c = await server.client()
    c.join(age="teen", queue="unmoderated")
    await c.error("TEEN_MODERATED_ONLY")


@pytest_twisted.ensureDeferred
async def test_most_shared_interests_preferred_then_oldest(make_server):
    server = await make_server(interest_timeout=60.0)
    one = await server.client()
    one.join(interests=["chess"])
    await one.expect("searching")
    old_two = await server.client()
    old_two.join(interests=["chess", "go"])
    await old_two.expect("matched")  # shares chess with `one`
    await one.expect("matched")
    x = await server.client()
    x.join(interests=["a"])
    await x.expect("searching")
    y1 = await server.client()
    y1.join(interests=["b", "c"])
    await y1.expect("searching")
    y2 = await server.client()
    y2.join(interests=["b", "c", "d"])  # shares 2 with y1
    assert (await y2.expect("matched"))["data"]["partnerInfo"]["sharedInterests"] == ["b", "c"]
    await y1.expect("matched")
    # two equally good candidates: the older one wins
    p1, p2 = await server.client(), await server.client()
    p1.join(interests=["k"])
    await p1.expect("searching")
    p2.join(interests=["k", "z"])
    await p2.expect("matched")
    await p1.expect("matched")
    q1, q2, q3 = await server.client(), await server.client(), await server.client()
    q1.join(interests=["m"])
    await q1.expect("searching")
    q2.join(interests=["m"])
    await q2.expect("matched")
    await q1.expect("matched")
    r1, r2 = await server.client(), await server.client()
    r1.join(interests=["r"])
    await r1.expect("searching")
    r2.join(interests=["r"])
    await r2.expect("searching", "matched")
    q3.join(interests=["r"])
    got = await q3.expect("searching", "matched")
    assert got["type"] == "searching"  # r1 and r2 already matched each other


@pytest_twisted.ensureDeferred
async def test_oldest_waiter_first_among_equals(server):
    first, second = await server.client(), await server.client()
    first.join(mode="voice", age="teen")
    await first.expect("searching")
    second.join(mode="voice", age="adult")
    await second.expect("searching")
    late = await server.client()
    late.join(mode="voice", age="teen")
    assert (await late.expect("matched"))["data"]["partnerId"] == first.user_id


@REDIS_ONLY
@pytest.mark.parametrize("other", [["surfing"], []], ids=["other-interests", "no-interests"])
@pytest_twisted.ensureDeferred
async def test_interest_fallback_after_timeout(make_server, other):
    """Someone with interests meets someone with other interests, or none, after the timeout."""
    server = await make_server(interest_timeout=0.4, match_interval=0.02)
    a, b = await server.client(), await server.client()
    a.join(interests=["knitting"])
    await a.expect("searching")
    b.join(interests=other)
    await b.expect("searching")
    await a.quiet(0.2)  # still within the timeout: no match
    ma = await a.expect("matched", timeout=3)
    assert ma["data"]["partnerInfo"]["sharedInterests"] == []
    await b.expect("matched")


@REDIS_ONLY
@pytest_twisted.ensureDeferred
async def test_interests_only_never_falls_back(make_server):
    server = await make_server(interest_timeout=0.1, match_interval=0.02)
    a, b = await server.client(), await server.client()
    a.join(interests=["knitting"], interestsOnly=True)
    await a.expect("searching")
    b.join()
    await b.expect("searching")
    await a.quiet(0.6)
    c = await server.client()
    c.join(interests=["KNITTING"])
    assert (await c.expect("matched"))["data"]["partnerId"] == a.user_id


@REDIS_ONLY
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_rematch_cooldown_keeps_skipped_pair_apart(make_server):
    server = await make_server(rematch_cooldown=0.8, match_interval=0.02)
    a, b = await server.pair()
    a.send("skip")
    await b.expect("partner_skipped")
    await a.expect("searching")
    b.send("skip")
    await b.expect("searching")
    await a.quiet(0.4)  # both wait, alone together, during the cooldown
    assert (await a.expect("matched", timeout=3))["data"]["partnerId"] == b.user_id
    await b.expect("matched")


@pytest_twisted.ensureDeferred
async def test_cooldown_skips_to_the_next_candidate(make_server):
    server = await make_server(rematch_cooldown=60)
    a, b = await server.pair()
    c = await server.client()
    c.join()
    await c.expect("searching")
    b.send("skip")  # b is requeued: c waits, a is in cooldown with b
    assert (await b.expect("matched"))["data"]["partnerId"] == c.user_id
    await a.expect("partner_skipped")
    a.send("skip")
    await a.expect("searching")


@pytest_twisted.ensureDeferred
async def test_json_text_frames_are_answered_in_json(server):
    c = await server.client(query="?format=json")
    assert c.received[0]["type"] == "connected" and c.binary[0] is False
    c.json = True
    c.send("ping")
    await c.expect("pong")
    assert c.binary[-1] is False
    other = await server.client()
    assert other.binary[0] is True  # msgpack until the client speaks JSON
    other.send_raw(json.dumps({"type": "ping"}).encode(), binary=False)
    await other.expect("pong")
    assert other.binary[-1] is False
    other.send_raw(msgpack.packb({"type": "ping"}), binary=True)
    await other.expect("pong")
    assert other.binary[-1] is True


@pytest_twisted.ensureDeferred
async def test_json_client_chats_with_msgpack_client(server):
    a = await server.client(query="?format=json")
    a.json = True
    b = await server.client()
    await match(a, b)
    a.send("message", {"content": "héllo ✓"})
    assert (await b.expect("message"))["data"]["content"] == "héllo ✓"
    b.send("message", {"content": "ok"})
    assert (await a.expect("message"))["data"]["content"] == "ok"


@REDIS_ONLY
@pytest_twisted.ensureDeferred
async def test_stats_and_searching_are_pushed(make_server):
    server = await make_server(stats_interval=0.2, searching_interval=0.2)
    a, _ = await server.pair()
    c = await server.client()
    c.join()
    await c.expect("searching")
    searching = await c.next(3)
    while searching["type"] != "searching":
        searching = await c.next(3)
    assert searching["data"]["position"] == 1
    stats = await a.next(3)
    while stats["type"] != "stats":
        stats = await a.next(3)
    assert set(stats["data"]) == {"totalOnline", "inQueue", "activeChats", "avgMatchTime"}
    assert stats["data"]["totalOnline"] == 3
    assert stats["data"]["inQueue"] == 1
    assert stats["data"]["activeChats"] == 1
    assert stats["data"]["avgMatchTime"] >= 0


@REDIS_ONLY
@pytest_twisted.ensureDeferred
async def test_estimated_time_comes_from_recent_matches(make_server):
    server = await make_server(interest_timeout=60.0)
    a, b = await server.client(), await server.client()
    a.join(interests=["x"])
    await a.expect("searching")
    await sleep(0.3)  # a waits ~300 ms: the wait the estimate averages
    b.join(interests=["x"])
    await a.expect("matched")
    c = await server.client()
    c.join(interests=["y"])
    est = (await c.expect("searching"))["data"]["estimatedTime"]
    assert 100 <= est <= 5000  # the average of ~300 ms and ~0 ms waits


async def _client_errors(server) -> Client:
    return await server.client()


@pytest_twisted.ensureDeferred
async def test_every_error_code_for_bad_input(server):
    c = await _client_errors(server)
    c.send_raw(b"\xc1\xff\x00", binary=True)
    await c.error("BAD_FRAME")
    c.send_raw(msgpack.packb([1, 2, 3]), binary=True)
    await c.error("BAD_FRAME")
    c.send_raw(msgpack.packb({"type": 7}), binary=True)
    await c.error("BAD_FRAME")
    c.send_raw(b"{not json", binary=False)
    await c.error("BAD_FRAME")
    c.send_raw(msgpack.packb({"type": "message", "data": {"content": "x" * 16400}}))
    await c.error("FRAME_TOO_LARGE")
    c.send("hello")
    await c.error("UNKNOWN_TYPE")
    c.send("join", {"ageCategory": "child", "mode": "text"})
    await c.error("INVALID_DATA")
    c.send("join", {"ageCategory": "adult", "mode": "smell"})
    await c.error("INVALID_DATA")
    c.send("join", {"ageCategory": "adult", "mode": "text", "queueType": "wild"})
    await c.error("INVALID_DATA")
    c.send("join", {"ageCategory": "adult", "mode": "text", "interests": ["a"] * 11})
    await c.error("INVALID_DATA")
    c.send("join", {"ageCategory": "adult", "mode": "text", "interests": ["x" * 33]})
    await c.error("INVALID_DATA")
    c.send("join", {"ageCategory": "adult", "mode": "text", "interests": [1]})
    await c.error("INVALID_DATA")
    c.send("join", "adult")
    await c.error("INVALID_DATA")
    c.send("message", {"content": "   "})
    await c.error("INVALID_DATA")
    c.send("message", {"content": "x" * 2001})
    await c.error("INVALID_DATA")
    c.send("typing", {"isTyping": "yes"})
    await c.error("INVALID_DATA")
    c.send("video_toggle", {})
    await c.error("INVALID_DATA")
    c.send("offer", {"type": "offer"})
    await c.error("INVALID_DATA")
    c.send("ice_candidate", {"candidate": 5})
    await c.error("INVALID_DATA")
    for kind, data in [
        ("message", {"content": "hi"}),
        ("typing", {"isTyping": True}),
        ("audio_toggle", {"enabled": True}),
        ("offer", {"type": "offer", "sdp": "v=0"}),
        ("answer", {"type": "answer", "sdp": "v=0"}),
        ("ice_candidate", {"candidate": ""}),
    ]:
        c.send(kind, data)
        await c.error("NOT_IN_CHAT")
    # still usable after all that
    c.send("ping")
    await c.expect("pong")


@pytest_twisted.ensureDeferred
async def test_bad_frames_never_reach_the_partner(server):
    a, b = await server.pair()
    a.send_raw(b"\x00garbage")
    await a.error("BAD_FRAME")
    a.send("message", {"content": ""})
    await a.error("INVALID_DATA")
    a.send("message", {"content": "fine"})
    assert (await b.expect("message"))["data"]["content"] == "fine"
    await b.quiet(0.1)


@pytest_twisted.ensureDeferred
async def test_too_many_bad_frames_closes_the_connection(server):
    c = await server.client()
    partner_a, partner_b = await server.pair()
    for _ in range(25):
        c.send_raw(b"\xc1")
    await c.error("BAD_FRAME")
    codes = []
    try:
        while True:
            frame = await c.next(3)
            codes.append(frame["data"]["code"])
    except Closed:  # the server closed the connection: the end of the stream
        pass
    assert codes[-1] == "TOO_MANY_ERRORS"
    assert c.close_code == 1008
    partner_a.send("message", {"content": "still here"})
    await partner_b.expect("message")


@pytest_twisted.ensureDeferred
async def test_huge_frame_closes_with_1009(server):
    c = await server.client()
    c.send_raw(b"\x00" * (70 * 1024))
    await c.closed
    assert c.close_code == 1009


@REDIS_ONLY
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_half_open_peer_is_dropped_by_server_pings(make_server):
    # Autobahn schedules ping timeouts on a timer batched to whole seconds: keep them >= 1 s
    server = await make_server(ping_interval=1.0, ping_timeout=2.0, resume_grace=1.0)
    a, b = await server.pair()
    # a live client answers the pings (Autobahn does it for us) and stays
    await eventually(lambda: a.pings >= 2, timeout=10, what="two pings answered")
    a.send("message", {"content": "alive"})
    assert (await b.expect("message"))["data"]["content"] == "alive"
    a.proto.transport.pauseProducing()  # a stops reading: no pongs any more
    await b.expect("partner_away", timeout=10)  # dropped: its session waits for a resume
    await b.expect("partner_disconnected", timeout=10)
    assert a.user_id not in server.hub.sessions
