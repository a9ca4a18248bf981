"""Matcher timing driven by a fake clock: interest fallback, cooldown expiry, tick resilience."""

from __future__ import annotations

from twisted.internet.task import Clock

from anygle.engine.base import EngineConfig
from anygle.engine.memory import MemoryEngine
from anygle.model import Match, Preferences, Stats
from anygle.periodic import Periodic


class Sink:
    def __init__(self) -> None:
        self.matched: list[tuple[str, Match]] = []
        self.left: list[tuple[str, str, str]] = []

    def on_matched(self, user_id: str, match: Match) -> None:
        self.matched.append((user_id, match))

    def on_partner_left(self, user_id: str, room_id: str, reason: str) -> None:
        self.left.append((user_id, room_id, reason))

    def on_relay(self, user_id, room_id, frame) -> None:
        pass

    def on_kick(self, user_id, code, reason) -> None:
        pass

    def on_undelivered(self, user_id, room_id, frame) -> None:
        pass

    def on_handover(self, user_id) -> None:
        return None


def engine(clock: Clock, **config) -> tuple[MemoryEngine, Sink]:
    e = MemoryEngine(EngineConfig(instance_id="t", **config), clock)
    sink = Sink()
    e.start(sink)
    return e, sink


def prefs(*interests: str, only: bool = False, mode: str = "text") -> Preferences:
    return Preferences("adult", mode, "moderated", interests, only)


def join(e: MemoryEngine, clock: Clock, user: str, p: Preferences) -> Match | None:
    got = e.join(user, p, clock.seconds()).result  # the memory engine answers at once
    assert got is None or isinstance(got, Match)
    return got


def test_fallback_exactly_at_interest_timeout():
    clock = Clock()
    e, sink = engine(clock, interest_timeout=5.0)
    assert join(e, clock, "a", prefs("chess")) is None
    clock.advance(1.0)
    assert join(e, clock, "b", prefs("golf")) is None
    clock.advance(3.9)  # a has waited 4.9 s, b 3.9 s
    assert e.tick(clock.seconds()).result == 0
    clock.advance(0.1)  # a is open now, b is not yet
    assert e.tick(clock.seconds()).result == 0
    clock.advance(1.0)  # both open
    assert e.tick(clock.seconds()).result == 1
    (_, m), _ = sink.matched
    assert m.initiator == "a" and m.responder == "b" and m.shared_interests == ()


def test_open_user_matches_expired_waiter_on_tick_not_before():
    clock = Clock()
    e, _sink = engine(clock, interest_timeout=2.0)
    join(e, clock, "a", prefs("chess"))
    assert join(e, clock, "b", prefs()) is None  # b takes anyone, but a still hopes for chess
    clock.advance(2.0)
    assert e.tick(clock.seconds()).result == 1


def test_interests_only_stays_until_a_shared_interest_arrives():
    clock = Clock()
    e, _ = engine(clock, interest_timeout=1.0)
    join(e, clock, "a", prefs("chess", only=True))
    join(e, clock, "b", prefs())
    for _ in range(10):
        clock.advance(1.0)
        assert e.tick(clock.seconds()).result == 0
    m = join(e, clock, "c", prefs("chess"))
    assert m is not None and {m.initiator, m.responder} == {"a", "c"}


def test_cooldown_expiry_is_retried_by_the_tick_for_interest_pairs():
    clock = Clock()
    e, _sink = engine(clock, rematch_cooldown=10.0, interest_timeout=100.0)
    join(e, clock, "a", prefs("chess", only=True))
    join(e, clock, "b", prefs("chess", only=True))
    assert e.leave_room("a", "skipped").result == "b"
    assert join(e, clock, "a", prefs("chess", only=True)) is None
    assert join(e, clock, "b", prefs("chess", only=True)) is None  # cooldown
    clock.advance(9.9)
    assert e.tick(clock.seconds()).result == 0
    clock.advance(0.2)
    assert e.tick(clock.seconds()).result == 1


def test_disconnect_leaves_no_trace():
    clock = Clock()
    e, _sink = engine(clock)
    e.connect("a", "127.0.0.1")
    e.connect("b", "127.0.0.1")
    join(e, clock, "a", prefs("x", "y"))
    e.disconnect("a")
    s = e.stats().result
    assert isinstance(s, Stats)
    assert s.in_queue == 0 and s.total_online == 1
    assert e.queues["adult:text:moderated"].by_interest == {}
    assert join(e, clock, "b", prefs("x")) is None


def test_counters_expire_and_are_purged():
    clock = Clock()
    e, _ = engine(clock)
    assert e.incr("k", 10).result == 1
    assert e.incr("k", 10).result == 2
    clock.advance(11)
    assert e.get_count("k").result == 0
    assert e.incr("k", 10).result == 1
    clock.advance(60)
    e.tick(clock.seconds())
    assert "k" not in e.counters


def test_bans_with_and_without_ttl():
    clock = Clock()
    e, _ = engine(clock)
    e.ban("ips", "1.2.3.4", "Spam", 100)
    e.ban("users", "u1", "Harassment", None)
    assert e.get_ban(None, "1.2.3.4").result == "Spam"
    assert e.get_ban("u1", "9.9.9.9").result == "Harassment"
    clock.advance(101)
    assert e.get_ban(None, "1.2.3.4").result is None
    assert e.unban("users", "u1").result is True
    assert e.get_ban("u1", None).result is None


def test_periodic_survives_exceptions_and_skips_overlap():
    from twisted.internet.defer import Deferred

    clock = Clock()
    calls: list[int] = []
    pending: list[Deferred] = []

    def flaky() -> Deferred | None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) == 2:
            d: Deferred = Deferred()
            pending.append(d)
            return d
        return None

    p = Periodic("t", 1.0, flaky, clock)
    p.startService()
    clock.advance(1.0)  # raises: logged, loop survives
    clock.advance(1.0)  # returns a Deferred that stays pending
    clock.advance(1.0)  # skipped: previous still running
    assert len(calls) == 2 and p.skipped == 1 and p.failures == 1
    pending[0].callback(None)
    clock.advance(1.0)
    assert len(calls) == 3
    p.stopService()
    clock.advance(5.0)
    assert len(calls) == 3
