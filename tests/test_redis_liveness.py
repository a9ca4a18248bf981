"""Liveness of the redis engine (anygle.engine.redis.liveness) and Redis restarts.

In one reactor, through the engines' public surface (``engine.liveness``, ``halt()``,
``health()``, ``stats()``): a suspect that comes back in time keeps everything, a fenced one
registers again cleanly, Redis restarted empty ends no chat.  The SIGSTOP and kill -9 tests on
real processes are in ``tests/test_redis_stall.py``.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted

from anygle.engine.redis import RedisEngine
from anygle.engine.redis.liveness import ALIVE, LOST, REAPED, Liveness
from tests.conftest import inbox_read, matched_across, now, prefs
from tests.harness import eventually

pytestmark = pytest.mark.slow  # real processes: not in the fast loop


def chat_of(sink, user: str) -> list:
    return [e[3]["data"] for e in sink.of("relay", user)]


@pytest_twisted.ensureDeferred
async def test_lease_renewed_by_a_thread_while_the_reactor_is_busy(engines, redis):
    a, _ = await engines("a")
    await eventually(lambda: a.liveness.report()["renewals"] > 2)
    # Keep the reactor busy (holding the GIL, as frame handling does) for longer than the lease
    # and its grace together: the thread keeps the lease.
    until = time.monotonic() + Liveness.lease_ttl + Liveness.grace + 0.5
    spins = 0
    while time.monotonic() < until:
        spins += sum(range(1000)) & 1
    assert redis.command("EXISTS", "instance:a") == 1
    assert redis.command("HEXISTS", "instances:suspect", "a") == 0
    report = a.liveness.report()
    gap = report["max_renewal_gap"]
    print(f"\nreactor busy 4.5 s: longest gap between lease renewals {gap:.3f} s")
    assert report["max_renewal_gap"] < 1.0, report
    assert a.health() == (True, "ok")


@pytest_twisted.ensureDeferred
async def test_a_suspect_that_comes_back_in_time_keeps_everything(engines, redis):
    a, sa, b, sb, m = await matched_across(engines)
    b.liveness.stop()  # as frozen: no renewal
    await eventually(lambda: redis.command("HEXISTS", "instances:suspect", "b") == 1, timeout=4)
    # a's heartbeat wrote the suspicion; its reply (which a counts) may still be on its way
    await eventually(lambda: a.liveness.counters["suspected"] >= 1, timeout=2)
    b.liveness.start()  # back within the grace period
    await eventually(lambda: redis.command("EXISTS", "instance:b") == 1, timeout=2)
    # a reaper sees the lease back and clears the suspicion
    await eventually(lambda: redis.command("HEXISTS", "instances:suspect", "b") == 0, timeout=2)
    assert redis.command("SISMEMBER", "instances", "b") == 1
    assert not sa.of("left") and not sb.of("left")
    a.relay("ub", m.room_id, {"type": "message", "data": 1})
    b.relay("ua", m.room_id, {"type": "message", "data": 2})
    await eventually(lambda: chat_of(sb, "ub") == [1] and chat_of(sa, "ua") == [2])
    assert b.counters["resyncs"] == 1  # the start only: nothing was registered again


@pytest_twisted.ensureDeferred
async def test_a_reaped_instance_is_fenced_and_registers_again_cleanly(engines, redis):
    a, sa = await engines("a")
    b, sb = await engines("b")
    for u in ("ua", "ua2"):
        await a.connect(u, "1.1.1.1")
    for u in ("ub", "ub2", "ub3"):
        await b.connect(u, "2.2.2.2")
    await a.join("ua", prefs(), now())
    cross = await b.join("ub", prefs(), now())
    await b.join("ub2", prefs(), now())
    local = await b.join("ub3", prefs(), now())
    assert {local.initiator, local.responder} == {"ub2", "ub3"}
    epoch = b.liveness.epoch
    b.liveness.stop()
    await eventually(lambda: sa.of("left"), timeout=Liveness.lease_ttl + Liveness.grace + 1.0)
    assert sa.of("left") == [("left", "ua", cross.room_id, "disconnected")]
    assert redis.command("HEXISTS", "instances:epoch", "b") == 0
    # b comes back: its renewal is refused (fenced), it registers again under a new epoch
    b.liveness.start()
    await eventually(lambda: sb.of("left", "ub"), timeout=3)
    await eventually(lambda: b.health()[0] and b.liveness.epoch != epoch, timeout=3)
    assert b.liveness.standing(0, b.liveness.generation) == REAPED
    assert redis.command("HGET", "instances:epoch", "b").decode() == b.liveness.epoch
    # its chat with ua ended on both sides, its same-instance chat goes on
    assert sb.of("left") == [("left", "ub", cross.room_id, "disconnected")]
    b.relay("ub3", local.room_id, {"type": "message", "data": "still here"})
    assert chat_of(sb, "ub3") == ["still here"]
    stats = await a.stats()
    assert (stats.total_online, stats.active_chats, stats.in_queue) == (5, 1, 0)


@pytest_twisted.ensureDeferred
async def test_redis_restarted_empty_ends_no_chat_and_loses_no_relay(engines, redis):
    a, sa = await engines("a")
    b, sb = await engines("b")
    for u in ("a1", "a2", "a3", "aw"):
        await a.connect(u, "1.1.1.1")
    await b.connect("b1", "2.2.2.2")
    await a.join("a1", prefs(), now())
    cross = await b.join("b1", prefs(), now())
    await a.join("a2", prefs(("l",)), now())
    local = await a.join("a3", prefs(("l",)), now())
    await a.join("aw", prefs(("rare",), only=True), now())
    await eventually(lambda: sa.of("matched", "a1"))
    sent_ab, sent_ba = [], []

    def send(k: int) -> None:
        a.relay("b1", cross.room_id, {"type": "message", "data": ("a", k)})
        b.relay("a1", cross.room_id, {"type": "message", "data": ("b", k)})
        sent_ab.append(("a", k))
        sent_ba.append(("b", k))

    for k in range(5):
        send(k)
    redis.kill()
    await eventually(lambda: not a.health()[0] and not b.health()[0])
    for k in range(5, 10):  # during the outage
        send(k)
        a.relay("a3", local.room_id, {"type": "message", "data": k})
    redis.start()
    await eventually(lambda: a.health()[0] and b.health()[0], timeout=6)
    for k in range(10, 15):
        send(k)
    await eventually(lambda: len(chat_of(sb, "b1")) == 15 and len(chat_of(sa, "a1")) == 15)
    assert chat_of(sb, "b1") == [list(x) for x in sent_ab]
    assert chat_of(sa, "a1") == [list(x) for x in sent_ba]
    assert chat_of(sa, "a3") == [5, 6, 7, 8, 9]
    assert not sa.of("left") and not sb.of("left")
    assert a.counters["restores"] == 1 and b.counters["restores"] == 1
    assert a.liveness.standing(0, "") == LOST and a.liveness.standing(1, "") == ALIVE
    stats = await a.stats()
    assert (stats.total_online, stats.active_chats, stats.in_queue) == (5, 2, 1)
    # the rooms are in Redis again: a skip ends the cross-instance one on both sides
    assert await b.leave_room("b1", "skipped") == "a1"
    await eventually(lambda: sa.of("left"))
    assert sa.of("left") == [("left", "a1", cross.room_id, "skipped")]
    assert redis.command("EXISTS", f"room:{local.room_id}") == 1


@pytest_twisted.ensureDeferred
async def test_relays_redis_acknowledged_but_lost_with_its_data_are_sent_again(engines, redis):
    a, sa, b, sb, cross = await matched_across(engines, "a1", "b1")
    a.relay("b1", cross.room_id, {"type": "message", "data": 0})
    await eventually(lambda: chat_of(sb, "b1") == [0])
    # b's inbox reader is cut off (it reconnects ~0.1 s later); meanwhile a's relay is written
    # to b's inbox (acknowledged), and Redis dies with it before b could read it
    readers = [
        line.split()[0].split("=")[1]
        for line in redis.command("CLIENT", "LIST").decode().splitlines()
        if "cmd=xread" in line
    ]
    for client_id in readers:
        redis.command("CLIENT", "KILL", "ID", client_id)
    a.relay("b1", cross.room_id, {"type": "message", "data": 1})
    await eventually(lambda: redis.command("XLEN", "inbox:b") >= 2, timeout=1, step=0.005)
    await a.incr("probe", 10)  # answered after the XADD: a has its acknowledgement
    redis.kill()  # b's reader is not back yet (it reconnects ~0.1 s after the cut)
    assert chat_of(sb, "b1") == [0]
    redis.start()
    await eventually(lambda: a.health()[0] and b.health()[0], timeout=6)
    a.relay("b1", cross.room_id, {"type": "message", "data": 2})
    await eventually(lambda: len(chat_of(sb, "b1")) >= 3)
    await inbox_read(redis, b, sb, "b1")
    assert chat_of(sb, "b1") == [0, 1, 2]
    assert b.counters["duplicates_dropped"] >= 1  # 0 came again, and was dropped
    assert not sa.of("left") and not sb.of("left")


@pytest_twisted.ensureDeferred
async def test_a_partner_instance_that_never_comes_back_is_reaped_after_a_restore(engines, redis):
    a, sa, b, _sb, cross = await matched_across(engines, "a1", "b1")
    b.halt()  # b dies during the outage
    redis.kill()
    await eventually(lambda: not a.health()[0])
    redis.start()
    await eventually(lambda: a.health()[0], timeout=6)
    # a restored b1 as a stand-in with a provisional lease for b; b never registers
    assert redis.command("SISMEMBER", "instance:b:users", "b1") == 1
    limit = Liveness.provisional_ttl + Liveness.grace + 1.5
    took = await eventually(lambda: sa.of("left"), timeout=limit)
    assert took > Liveness.provisional_ttl - 1
    assert sa.of("left") == [("left", "a1", cross.room_id, "disconnected")]
    assert (await a.stats()).total_online == 1


def test_public_surface():
    assert RedisEngine.halt.__doc__ and Liveness.report.__doc__
