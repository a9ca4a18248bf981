"""The ``memory`` engine: all state in this process, for a single instance and for development.

Matching is indexed so that a join costs in proportion to the users it could be matched with, not
to the queue length: each queue keeps its waiting users in arrival order, an index from interest to
users, the set of *open* users (see :mod:`anygle.matching`) and the users with interests whose
``interest-timeout`` has not run out yet, in expiry order.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, ClassVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from anygle.engine.base import EngineConfig, EngineSink, IpNames, ip_names
from anygle.limits import gcra
from anygle.matching import QueueEntry, is_open, pair_key, preference_key, shared_interests
from anygle.model import AGE_CATEGORIES, MODES, QUEUE_TYPES, Match, Preferences, Stats
from anygle.reports import BAN_REASON, Report, ReportOutcome

MAX_REPORTS = 10_000  # reports kept in memory (the oldest go first; and after their retention)

# The order a tick works through the queues, the redis engine's too (its QUEUES): matches of one
# tick add their waits to the recent waits (avgMatchTime, estimates) in the same order.
_TICK_ORDER = {
    f"{c}:{m}:{t}": k
    for k, (c, m, t) in enumerate(itertools.product(AGE_CATEGORIES, MODES, QUEUE_TYPES))
}


@dataclass(slots=True)
class _Queue:
    entries: dict[str, QueueEntry] = field(default_factory=dict)  # arrival order
    by_interest: dict[str, dict[str, None]] = field(default_factory=dict)
    open: dict[str, None] = field(default_factory=dict)
    pending: deque[QueueEntry] = field(default_factory=deque)  # with interests, not yet open
    waits: deque[float] = field(default_factory=deque)  # recent join -> matched, ms


@dataclass(slots=True)
class _Room:
    room_id: str
    a: str
    b: str


class MemoryEngine:
    """One process, no Redis.  Every call completes synchronously (the Deferreds have fired)."""

    name: ClassVar[str] = "memory"

    def __init__(self, config: EngineConfig, clock: IReactorTime) -> None:
        self.config = config
        self.clock = clock
        self.sink: EngineSink | None = None
        self.online: dict[str, str] = {}  # user -> ip
        self.queues: dict[str, _Queue] = {}
        self.waiting: dict[str, QueueEntry] = {}  # user -> entry
        self.rooms: dict[str, _Room] = {}  # room id -> room
        self.room_of: dict[str, str] = {}  # user -> room id
        self.cooldowns: dict[tuple[str, str], float] = {}  # pair -> until
        self._cooldown_heap: list[tuple[float, tuple[str, str]]] = []
        self._retry: dict[str, float] = {}  # user -> when a cooldown that blocked them ends
        self.counters: dict[str, tuple[int, float]] = {}  # key -> (value, expires at)
        self.bans: dict[tuple[str, str], tuple[str, float | None]] = {}
        self.rates: dict[str, float] = {}  # key -> GCRA theoretical arrival time
        self.connections: dict[str, int] = {}  # abuse key -> open connections
        self.moderation: dict[str, int] = {}  # "{tier}:{category}:{outcome}" -> count
        # report id -> (when, record), oldest first
        self.stored_reports: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self.reported_rooms: dict[tuple[str, str], str] = {}  # (room, reporter) -> report id
        self.reporters: dict[str, dict[str, float]] = {}  # reported -> {reporter key: last at}
        self.report_counts: dict[str, int] = {}  # reason -> reports received
        self.report_blocks = 0
        self.total_matches = 0
        self.recent_waits: deque[float] = deque(maxlen=config.match_history)
        self._seq = itertools.count()
        self._next_purge = 0.0

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, sink: EngineSink) -> Deferred[None]:
        self.sink = sink
        return succeed(None)

    def stop(self) -> Deferred[None]:
        for user_id in list(self.online):
            self._disconnect(user_id)
        return succeed(None)

    def health(self) -> tuple[bool, str]:
        return True, "ok"

    # --- sessions -------------------------------------------------------------------------
    def connect(self, user_id: str, ip: str, resume_key: str = "") -> Deferred[None]:
        self.online[user_id] = ip
        return succeed(None)

    def rekey(self, user_id: str, resume_key: str) -> Deferred[None]:
        return succeed(None)  # one instance: the hub knows every token

    def claim(self, resume_key: str, new_key: str) -> Deferred[dict[str, Any] | None]:
        return succeed(None)  # no other instance to hold a session

    def disconnect(self, user_id: str) -> Deferred[None]:
        self._disconnect(user_id)
        return succeed(None)

    def _disconnect(self, user_id: str) -> None:
        self._dequeue(user_id)
        self._end_room(user_id, "disconnected")
        self.online.pop(user_id, None)

    # --- queues ---------------------------------------------------------------------------
    def join(self, user_id: str, prefs: Preferences, now: float) -> Deferred[Match | None]:
        if user_id in self.room_of:
            raise RuntimeError(f"join while in a room: {user_id}")
        self._dequeue(user_id)
        entry = QueueEntry(user_id, prefs, now, next(self._seq))
        queue = self.queues.setdefault(prefs.queue, _Queue())
        partner = self._find_partner(queue, entry, now)
        if partner is not None:
            return succeed(self._match(queue, partner, entry, now))
        self._enqueue(queue, entry, now)
        return succeed(None)

    def _enqueue(self, queue: _Queue, entry: QueueEntry, now: float) -> None:
        uid = entry.user_id
        queue.entries[uid] = entry
        self.waiting[uid] = entry
        for interest in entry.interests:
            queue.by_interest.setdefault(interest, {})[uid] = None
        if is_open(entry, now, self.config.interest_timeout):
            queue.open[uid] = None
        elif not entry.prefs.interests_only:
            queue.pending.append(entry)

    def _dequeue(self, user_id: str) -> bool:
        self._retry.pop(user_id, None)  # a cooldown retry belongs to the entry it was noted for
        entry = self.waiting.pop(user_id, None)
        if entry is None:
            return False
        queue = self.queues[entry.prefs.queue]
        del queue.entries[user_id]
        queue.open.pop(user_id, None)
        for interest in entry.interests:
            users = queue.by_interest[interest]
            del users[user_id]
            if not users:
                del queue.by_interest[interest]
        # ``pending`` is cleaned lazily in tick(): entries no longer waiting are skipped.
        return True

    def _cooling(self, a: str, b: str, now: float) -> float:
        """When the pair's cooldown ends (0 when there is none)."""
        until = self.cooldowns.get(pair_key(a, b), 0.0)
        return until if until > now else 0.0

    def _find_partner(self, queue: _Queue, seeker: QueueEntry, now: float) -> QueueEntry | None:
        """The best compatible waiting user (rules: :mod:`anygle.matching`), or None.  When only
        cooldowns stand in the way, the tick tries the seeker again once the first one ends."""
        sharing = {u for i in seeker.prefs.interests for u in queue.by_interest.get(i, ())}
        best, blocked_until = self._best(queue, seeker, sharing, now)
        if best is None and is_open(seeker, now, self.config.interest_timeout):
            best, blocked = self._best(queue, seeker, queue.open, now)
            blocked_until = _earliest(blocked_until, blocked)
        if best is None and blocked_until:
            self._retry[seeker.user_id] = blocked_until
        return best

    def _best(
        self, queue: _Queue, seeker: QueueEntry, candidates: Iterable[str], now: float
    ) -> tuple[QueueEntry | None, float]:
        """The preferred candidate outside cooldown, and when the first blocking cooldown ends
        (0: none blocked)."""
        best: QueueEntry | None = None
        best_key: tuple[int, float, int] | None = None
        blocked_until = 0.0
        for uid in candidates:
            if uid == seeker.user_id:
                continue
            until = self._cooling(seeker.user_id, uid, now)
            if until:
                blocked_until = _earliest(blocked_until, until)
                continue
            candidate = queue.entries[uid]
            key = preference_key(seeker, candidate)
            if best_key is None or key < best_key:
                best, best_key = candidate, key
        return best, blocked_until

    def _match(self, queue: _Queue, waiter: QueueEntry, seeker: QueueEntry, now: float) -> Match:
        """Create the room; the user who waited longer is the initiator."""
        self._dequeue(waiter.user_id)
        self._dequeue(seeker.user_id)
        match = Match(
            room_id=uuid.uuid4().hex,
            mode=seeker.prefs.mode,
            initiator=waiter.user_id,
            responder=seeker.user_id,
            interests={
                waiter.user_id: waiter.prefs.interests,
                seeker.user_id: seeker.prefs.interests,
            },
            shared_interests=shared_interests(waiter, seeker),
            matched_at=now,
        )
        room = _Room(match.room_id, waiter.user_id, seeker.user_id)
        self.rooms[room.room_id] = room
        self.room_of[room.a] = room.room_id
        self.room_of[room.b] = room.room_id
        self.total_matches += 1
        for e in (waiter, seeker):
            wait_ms = (now - e.joined_at) * 1000.0
            queue.waits.append(wait_ms)
            self.recent_waits.append(wait_ms)
        while len(queue.waits) > self.config.match_history:
            queue.waits.popleft()
        assert self.sink is not None
        self.sink.on_matched(waiter.user_id, match)
        self.sink.on_matched(seeker.user_id, match)
        return match

    def tick(self, now: float) -> Deferred[int]:
        """Open the users whose interest timeout ran out, retry the open and the cooled-down."""
        made = 0
        self._expire_cooldowns(now)
        if now >= self._next_purge:
            self._purge(now)
        for name in sorted(self.queues, key=lambda n: _TICK_ORDER.get(n, len(_TICK_ORDER))):
            queue = self.queues[name]
            while (
                queue.pending and now - queue.pending[0].joined_at >= self.config.interest_timeout
            ):
                entry = queue.pending.popleft()
                if queue.entries.get(entry.user_id) is entry:
                    queue.open[entry.user_id] = None
            seekers = [queue.entries[u] for u in queue.open]
            seekers += [
                e
                for u, e in queue.entries.items()
                if u not in queue.open and 0 < self._retry.get(u, 0.0) <= now
            ]
            seekers.sort(key=lambda e: (e.joined_at, e.seq))
            for seeker in seekers:
                if self.waiting.get(seeker.user_id) is not seeker:
                    continue  # matched earlier in this tick
                self._retry.pop(seeker.user_id, None)
                partner = self._find_partner(queue, seeker, now)
                if partner is not None:
                    waiter, joiner = sorted((seeker, partner), key=lambda e: (e.joined_at, e.seq))
                    self._match(queue, waiter, joiner, now)
                    made += 1
        return succeed(made)

    def _purge(self, now: float) -> None:
        """Drop expired counters and bans so that memory does not grow with every IP seen."""
        self._next_purge = now + 10.0
        self.counters = {k: v for k, v in self.counters.items() if v[1] > now}
        self.bans = {k: v for k, v in self.bans.items() if v[1] is None or v[1] > now}
        self.rates = {k: tat for k, tat in self.rates.items() if tat > now}
        self._expire_reports(now)
        since = now - self.config.report_ban_window
        for user in list(self.reporters):
            keys = {k: at for k, at in self.reporters[user].items() if at > since}
            if keys:
                self.reporters[user] = keys
            else:
                del self.reporters[user]

    def _expire_cooldowns(self, now: float) -> None:
        heap = self._cooldown_heap
        while heap and heap[0][0] <= now:
            until, pair = heapq.heappop(heap)
            if self.cooldowns.get(pair) == until:
                del self.cooldowns[pair]

    def queue_status(self, user_ids: list[str]) -> Deferred[dict[str, tuple[int, float]]]:
        wanted = {u: self.waiting[u] for u in user_ids if u in self.waiting}
        result: dict[str, tuple[int, float]] = {}
        for name in {e.prefs.queue for e in wanted.values()}:
            queue = self.queues[name]
            estimate = self._estimate(queue)
            for position, uid in enumerate(queue.entries, 1):
                if uid in wanted:
                    result[uid] = (position, estimate)
        return succeed(result)

    def _estimate(self, queue: _Queue) -> float:
        waits = queue.waits or self.recent_waits
        return round(sum(waits) / len(waits), 1) if waits else 0.0

    # --- rooms ----------------------------------------------------------------------------
    def leave_room(self, user_id: str, reason: str) -> Deferred[str | None]:
        return succeed(self._end_room(user_id, reason))

    def _end_room(self, user_id: str, reason: str) -> str | None:
        room_id = self.room_of.pop(user_id, None)
        if room_id is None:
            return None
        room = self.rooms.pop(room_id)
        partner = room.b if room.a == user_id else room.a
        self.room_of.pop(partner, None)
        if reason == "skipped":
            until = self.clock.seconds() + self.config.rematch_cooldown
            pair = pair_key(user_id, partner)
            self.cooldowns[pair] = until
            heapq.heappush(self._cooldown_heap, (until, pair))
        assert self.sink is not None
        self.sink.on_partner_left(partner, room_id, reason)
        return partner

    def relay(self, partner_id: str, room_id: str, frame: dict[str, Any]) -> None:
        if self.room_of.get(partner_id) == room_id:
            assert self.sink is not None
            self.sink.on_relay(partner_id, room_id, frame)

    # --- stats ----------------------------------------------------------------------------
    def stats(self) -> Deferred[Stats]:
        waits = self.recent_waits
        return succeed(
            Stats(
                total_online=len(self.online),
                in_queue=len(self.waiting),
                active_chats=len(self.rooms),
                avg_match_time=round(sum(waits) / len(waits), 1) if waits else 0.0,
                total_matches=self.total_matches,
                queues={n: len(q.entries) for n, q in self.queues.items() if q.entries},
                moderation=dict(self.moderation),
                reports=dict(self.report_counts),
                report_blocks=self.report_blocks,
            )
        )

    # --- counters and bans ----------------------------------------------------------------
    def incr(self, key: str, ttl: float) -> Deferred[int]:
        now = self.clock.seconds()
        value, expires = self.counters.get(key, (0, 0.0))
        value = value + 1 if expires > now else 1
        self.counters[key] = (value, now + ttl)
        return succeed(value)

    def get_count(self, key: str) -> Deferred[int]:
        value, expires = self.counters.get(key, (0, 0.0))
        return succeed(value if expires > self.clock.seconds() else 0)

    def get_ban(self, user_id: str | None, ips: IpNames = None) -> Deferred[str | None]:
        return succeed(self._ban_reason(user_id, ips))

    def _ban_reason(self, user_id: str | None, ips: IpNames) -> str | None:
        now = self.clock.seconds()
        keys = [("users", user_id)] if user_id is not None else []
        keys += [("ips", name) for name in ip_names(ips)]
        for key in keys:
            if key not in self.bans:
                continue
            reason, until = self.bans[key]
            if until is None or until > now:
                return reason
            del self.bans[key]
        return None

    def ban(self, kind: str, value: str, reason: str, ttl: float | None) -> Deferred[None]:
        until = None if ttl is None else self.clock.seconds() + ttl
        self.bans[(kind, value)] = (reason, until)
        return succeed(None)

    def unban(self, kind: str, value: str) -> Deferred[bool]:
        return succeed(self.bans.pop((kind, value), None) is not None)

    def check_bans(self, users: dict[str, IpNames]) -> Deferred[dict[str, str]]:
        if not self.bans:
            return succeed({})
        found = {u: self._ban_reason(u, ips) for u, ips in users.items()}
        return succeed({u: reason for u, reason in found.items() if reason is not None})

    # --- abuse limits ---------------------------------------------------------------------
    def rate(self, key: str, limit: int, window: float) -> Deferred[bool]:
        now = self.clock.seconds()
        allowed, tat = gcra(self.rates.get(key, 0.0), now, limit, window)
        self.rates[key] = tat
        return succeed(allowed)

    def acquire_connection(self, key: str, limit: int) -> Deferred[bool]:
        count = self.connections.get(key, 0)
        if count >= limit:
            return succeed(False)
        self.connections[key] = count + 1
        return succeed(True)

    def record_moderation(self, tier: str, category: str, outcome: str) -> None:
        key = f"{tier}:{category}:{outcome}"
        self.moderation[key] = self.moderation.get(key, 0) + 1

    # --- reports ---------------------------------------------------------------------------
    def report(self, report: Report) -> Deferred[ReportOutcome]:
        now = self.clock.seconds()
        self._expire_reports(now)
        first = self.reported_rooms.get((report.room_id, report.reporter))
        if first is not None:
            return succeed(ReportOutcome(first, duplicate=True))
        self.stored_reports[report.report_id] = (
            now,
            report.record(self.online.get(report.reported)),
        )
        self.reported_rooms[(report.room_id, report.reporter)] = report.report_id
        while len(self.stored_reports) > MAX_REPORTS:
            self._drop_oldest_report()
        self.report_counts[report.reason] = self.report_counts.get(report.reason, 0) + 1
        since = now - self.config.report_ban_window
        keys = self.reporters.setdefault(report.reported, {})
        keys[report.reporter_key] = now
        recent = sum(1 for at in keys.values() if at > since)
        threshold = self.config.report_ban_reporters
        banned = False
        if threshold and recent >= threshold and self._ban_reason(report.reported, None) is None:
            self.ban("users", report.reported, BAN_REASON, self.config.report_ban_ttl)
            self.report_blocks += 1
            banned = True
        return succeed(ReportOutcome(report.report_id, banned=banned))

    def reports(self, limit: int) -> Deferred[list[dict[str, Any]]]:
        self._expire_reports(self.clock.seconds())
        newest = reversed(self.stored_reports.values())
        return succeed([deepcopy(r) for _, r in itertools.islice(newest, max(0, limit))])

    def get_report(self, report_id: str) -> Deferred[dict[str, Any] | None]:
        self._expire_reports(self.clock.seconds())
        found = self.stored_reports.get(report_id)
        return succeed(deepcopy(found[1]) if found is not None else None)  # ours stays intact

    def _expire_reports(self, now: float) -> None:
        limit = now - self.config.report_retention
        while self.stored_reports and next(iter(self.stored_reports.values()))[0] <= limit:
            self._drop_oldest_report()

    def _drop_oldest_report(self) -> None:
        _, (_, record) = self.stored_reports.popitem(last=False)
        self.reported_rooms.pop((record["roomId"], record["reporter"]), None)

    def release_connection(self, key: str) -> Deferred[None]:
        count = self.connections.get(key, 0) - 1
        if count > 0:
            self.connections[key] = count
        else:
            self.connections.pop(key, None)
        return succeed(None)


def _earliest(a: float, b: float) -> float:
    """The earlier of two times, where 0 means "none"."""
    return min(a, b) if a and b else a or b
