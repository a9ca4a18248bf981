"""The memory engine and the redis engine behave the same: a Hypothesis state machine drives both
in lockstep and compares everything a client can see.

The matching rules exist twice (``anygle/engine/memory.py`` with ``anygle/matching.py``, and the
Lua scripts of ``anygle/engine/redis/lua/``), and so does GCRA (``anygle/limits.py``,
``rate.lua``).  Each step is what the hub asks of an engine — a join (connecting first, after
the handshake rate limit; interests, ``interestsOnly``, two queues; a join in a chat skips first),
a skip (the rematch cooldown; the skipper searches again), a disconnect, or time passing and a
matcher tick (interest fallback, cooldown retries) — applied to a :class:`MemoryEngine` and to a
:class:`RedisEngine` on the test redis-server.  Each operation must give the same result and the
same events (matched: who, initiator, shared interests; partner left: who, which pair, why), and
after every step both must show the same stats and the same ``searching`` figures (queue position
and estimated time) for every user.

Time is a ``task.Clock`` shared by both engines, moved in steps of 1/8 s: both engines see the
same "now", and waits in milliseconds are exact on both sides (the redis engine keeps integer
milliseconds, the memory engine floats).  Rate-limit windows are long (30 s, 120 s) because
Redis expires the GCRA key in real time while the test's clock jumps.

Runs on the settings profile ``differential``: derandomised, so CI runs the same ~8,800
operations (100 examples, ~11 s) every time.  ``DIFFERENTIAL_PROFILE=differential-long`` explores
at random (1,000 examples, ~110,000 operations, ~4 min).  Mismatches it found are pinned below.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.internet import reactor, task, threads
from twisted.internet.interfaces import IReactorFromThreads

from anygle.engine.base import EngineConfig
from anygle.engine.memory import MemoryEngine
from anygle.engine.redis import RedisEngine
from anygle.model import Match, Preferences
from tests.conftest import Sink
from tests.harness import RedisServer

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

settings.register_profile(
    "differential",
    max_examples=100,
    stateful_step_count=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "differential-long",
    parent=settings.get_profile("differential"),
    max_examples=1000,
    stateful_step_count=100,
    derandomize=False,
)
PROFILE = settings.get_profile(os.environ.get("DIFFERENTIAL_PROFILE", "differential"))

USERS = [f"u{i}" for i in range(6)]
QUEUES = [("adult", "text", "moderated"), ("adult", "text", "unmoderated")]
INTEREST_POOL = ["a", "b", "c", "d"]
# seconds the clock moves before a tick (generation favours the first: a second, not zero)
STEPS = [1.0, 2.0, 0.125, 5.0, 0.5, 30.0, 0.0]
# a handshake rate limit: (limit, window s) -- long windows, see above
handshakes = st.tuples(st.integers(1, 4), st.sampled_from([30.0, 120.0]))


def _prefs(queue: tuple[str, str, str], interests: list[str], only: bool) -> Preferences:
    return Preferences(*queue, tuple(interests), only)


prefs_strategy = st.builds(
    _prefs,
    st.sampled_from(QUEUES),
    st.lists(st.sampled_from(INTEREST_POOL), max_size=3, unique=True),
    st.booleans(),
)


def in_reactor(d_or_call: Any, *args: Any) -> Any:
    """Run in the reactor thread and wait for the result (the machine runs in a thread of its
    own: Hypothesis is synchronous, the engines live in the reactor)."""
    return threads.blockingCallFromThread(IReactorFromThreads(reactor), d_or_call, *args)


class EnginesMachine(RuleBasedStateMachine):
    """Both engines, one clock, one model of who is online and who is in a room."""

    redis: RedisServer  # set by the test
    seen: dict[str, int] = {}  # what the examples exercised, over all of them (reported)

    def __init__(self) -> None:
        super().__init__()
        self.clock = task.Clock()
        self.clock.advance(1000.0)
        self.engines: list[Any] = []
        self.sinks: list[Sink] = []
        self.rooms: list[dict[str, frozenset[str]]] = [{}, {}]  # per engine: room id -> pair
        self.online: set[str] = set()
        self.in_room: set[str] = set()
        self.prefs: dict[str, Preferences] = {}  # each user's last join

    @initialize(
        interest_timeout=st.sampled_from([2.0, 60.0]),
        match_history=st.sampled_from([3, 100]),
    )
    def start(self, interest_timeout: float, match_history: int) -> None:
        self.redis.command("FLUSHALL")
        config = EngineConfig(
            instance_id="diff",
            redis_url=self.redis.url,
            interest_timeout=interest_timeout,
            rematch_cooldown=5.0,
            match_history=match_history,
        )
        for engine in (MemoryEngine(config, self.clock), RedisEngine(config, self.clock, reactor)):
            sink = Sink()
            in_reactor(engine.start, sink)
            self.engines.append(engine)
            self.sinks.append(sink)

    def teardown(self) -> None:
        for engine in self.engines:
            in_reactor(engine.stop)

    # --- one operation on both engines ---------------------------------------------------------
    def both(self, operation: str, *args: Any) -> Any:
        """``operation(*args)`` on each engine; the results and the events it caused must agree.
        Returns the memory engine's result."""
        results, events = [], []
        for k, (engine, sink) in enumerate(zip(self.engines, self.sinks, strict=True)):
            before = len(sink.events)
            result = in_reactor(getattr(engine, operation), *args)
            results.append(self.normal(k, result))
            # a tick works through the queues in another order: the same set per step
            events.append(sorted(self.normal(k, e) for e in sink.events[before:]))
        assert results[1] == results[0], (operation, args, results)
        assert events[1] == events[0], (operation, args, events)
        self.count(operation)
        if operation == "rate" and not results[0]:
            self.count("rate refused")
        for event in events[0]:
            self.count(f"{operation}: {event[0]}")
            if event[0] == "matched":
                self.in_room.update((event[2], event[3]))
            elif event[0] == "left":
                self.in_room.discard(event[1])
        return results[0]

    @classmethod
    def count(cls, what: str) -> None:
        cls.seen[what] = cls.seen.get(what, 0) + 1

    def normal(self, k: int, value: Any) -> Any:
        """What is compared of a result or an event: rooms by their pair (ids are random)."""
        if isinstance(value, Match):
            pair = frozenset((value.initiator, value.responder))
            self.rooms[k][value.room_id] = pair
            interests = tuple(sorted(value.interests.items()))
            return (value.initiator, value.responder, value.shared_interests, interests)
        if isinstance(value, tuple) and value and value[0] == "matched":
            m = value[2]
            return ("matched", value[1], *self.normal(k, m), m.mode, m.matched_at)
        if isinstance(value, tuple) and value and value[0] == "left":
            _, user, room_id, reason = value
            return ("left", user, sorted(self.rooms[k][room_id]), reason)
        return value

    # --- rules: what the hub asks of an engine ---------------------------------------------------
    @precondition(lambda self: self.engines)
    @rule(user=st.sampled_from(USERS), prefs=prefs_strategy, handshakes=handshakes)
    def join(self, user: str, prefs: Preferences, handshakes: tuple[int, float]) -> None:
        """A ``join`` (connecting first if need be, after the handshake rate check; in a chat,
        a join is a skip first)."""
        if user not in self.online:
            self.both("rate", "ws:10.0.0.1", *handshakes)  # refused or not, the user comes in
            self.both("connect", user, "10.0.0.1")
            self.online.add(user)
        if user in self.in_room:
            self.both("leave_room", user, "skipped")
            self.in_room.discard(user)
        self.prefs[user] = prefs
        self.both("join", user, prefs, self.clock.seconds())

    @precondition(lambda self: self.in_room)
    @rule(data=st.data())
    def skip(self, data: st.DataObject) -> None:
        """A ``skip``: the partner is told, the skipper searches again with the same prefs."""
        user = data.draw(st.sampled_from(sorted(self.in_room)))
        partner = self.both("leave_room", user, "skipped")
        assert partner is not None
        self.in_room.discard(user)
        self.both("join", user, self.prefs[user], self.clock.seconds())

    @precondition(lambda self: self.online)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.online)))
        self.both("disconnect", user)
        self.online.discard(user)
        self.in_room.discard(user)

    @precondition(lambda self: self.engines)
    @rule(seconds=st.sampled_from(STEPS))
    def tick(self, seconds: float) -> None:
        """Time passes, then the matcher ticks (interest fallback, cooldown retries)."""
        in_reactor(self.clock.advance, seconds)
        self.both("tick", self.clock.seconds())

    # --- after every step ----------------------------------------------------------------------
    @invariant()
    def same_stats_and_searching_figures(self) -> None:
        if not self.engines:
            return
        stats = []
        for engine in self.engines:
            s = in_reactor(engine.stats)
            shown = (s.total_online, s.in_queue, s.active_chats, s.total_matches)
            stats.append((*shown, s.avg_match_time, s.queues))
        assert stats[1] == stats[0], stats
        status = [in_reactor(e.queue_status, USERS) for e in self.engines]
        assert status[1] == status[0], status


@pytest_twisted.ensureDeferred
async def test_memory_and_redis_engines_agree(redis: RedisServer) -> None:
    EnginesMachine.redis = redis
    seen: dict[str, int] = {}
    EnginesMachine.seen = seen
    await threads.deferToThread(run_state_machine_as_test, EnginesMachine, settings=PROFILE)
    operations = sum(n for what, n in seen.items() if ":" not in what and " " not in what)
    print(f"\n{operations} operations on both engines: {dict(sorted(seen.items()))}")
    # it did exercise what it is for (the counts vary a little with the machine's speed: Redis
    # expires rate-limit keys in real time, so a slower run sees other refusals and paths)
    assert operations >= 2000
    assert seen["join: matched"] >= 200 and seen["tick: matched"] >= 20
    assert seen["leave_room: left"] >= 50 and seen["disconnect: left"] >= 20
    assert seen["rate refused"] >= 20


# --- what the machine found, pinned: each behaves the same on both engines -----------------------


@pytest_twisted.async_yield_fixture(params=[MemoryEngine, RedisEngine], ids=["memory", "redis"])
async def engine(request: pytest.FixtureRequest, redis: RedisServer):
    """``await engine(**config)`` -> (engine, sink, clock) at t=1000 on a test clock."""
    made: list[Any] = []

    async def make(**config: Any) -> tuple[Any, Sink, task.Clock]:
        redis.command("FLUSHALL")
        clock = task.Clock()
        clock.advance(1000.0)
        cfg = EngineConfig("pin", redis_url=redis.url, **config)
        e = (
            MemoryEngine(cfg, clock)
            if request.param is MemoryEngine
            else RedisEngine(cfg, clock, reactor)
        )
        sink = Sink()
        await e.start(sink)
        made.append(e)
        return e, sink, clock

    yield make
    for e in made:
        await e.stop()


def only(*interests: str, queue: str = "moderated") -> Preferences:
    return Preferences("adult", "text", queue, interests, True)


@pytest_twisted.ensureDeferred
async def test_positions_follow_arrival_within_one_millisecond(engine):
    """Found by the machine: Redis ordered users who joined in the same millisecond by name."""
    e, _, clock = await engine()
    for u in ("zed", "amy"):
        await e.connect(u, "10.0.0.1")
        await e.join(u, only(u), clock.seconds())
    assert await e.queue_status(["amy", "zed"]) == {"zed": (1, 0.0), "amy": (2, 0.0)}


@pytest_twisted.ensureDeferred
async def test_a_cooldown_retry_ends_with_the_queue_entry_it_was_noted_for(engine):
    """Found while writing the machine (its random walk rarely gets here): the memory engine kept
    a cooldown retry across a new join that no cooldown blocked, and so tried the user again at
    the tick, ahead of those really due."""
    e, sink, clock = await engine(interest_timeout=60.0, rematch_cooldown=5.0)
    for u in ("u", "x1", "x2"):
        await e.connect(u, "10.0.0.1")
    now = clock.seconds()
    for partner, wants in (("x1", ("a",)), ("x2", ("b", "c"))):  # u skips both: cooldowns
        await e.join(partner, only(*wants), now)
        await e.join("u", only("a", "b", "c"), now)
        assert await e.leave_room("u", "skipped") == partner
    await e.join("u", only("a", "b", "c"), now)
    await e.join("x1", only("a"), now)  # kept from u by the cooldown
    await e.join("u", only("a", "b", "c"), now)  # kept from x1: a retry is noted
    await e.join("x1", only("z"), now)  # x1 looks elsewhere
    await e.join("u", only("a", "b", "c"), now)  # nobody in the way: no retry for this entry
    await e.join("x1", only("a"), now)  # both kept from u: their retries are due at 1005
    await e.join("x2", only("b", "c"), now)
    clock.advance(6.0)
    assert await e.tick(clock.seconds()) == 1
    m = sink.of("matched")[-1][2]
    assert (m.initiator, m.responder) == ("u", "x1")  # x1 was due first, and takes u


@pytest_twisted.ensureDeferred
async def test_a_tick_fills_the_recent_waits_in_queue_order(engine):
    """Found by the machine: the memory engine ticked the queues in the order they were first
    used, Redis in the declared order; with the recent waits trimmed, avgMatchTime differed."""
    e, _, clock = await engine(interest_timeout=2.0, match_history=2)
    joins = [
        ("u1", "unmoderated", ()),  # open at once
        ("m1", "moderated", ()),
        ("u2", "unmoderated", ("x",)),  # open after 2 s
        ("m2", "moderated", ("y",)),
    ]
    for (user, queue, interests), at in zip(joins, (1000.0, 1000.0, 1001.0, 1002.0), strict=True):
        clock.advance(at - clock.seconds())
        await e.connect(user, "10.0.0.1")
        assert await e.join(user, Preferences("adult", "text", queue, interests), at) is None
    clock.advance(2.0)
    assert await e.tick(clock.seconds()) == 2
    # moderated first (waits 4 s and 2 s), then unmoderated (4 s and 3 s): the last two count
    assert (await e.stats()).avg_match_time == 3500.0
