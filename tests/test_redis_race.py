"""Race: hundreds of clients spread over three ``twistd`` instances join, chat, skip, rejoin and
reconnect at random.  What every client saw, and Redis itself (atomic snapshots while it runs, and
at the end), must satisfy the invariants: nobody in two rooms, never oneself, both partners name
the same room, and once everybody is gone no queue entry, room, session or online count is left."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.error import ConnectError

from tests.harness import Cluster, eventually, sleep
from tests.wsclient import Client, Closed

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

N_CLIENTS = 240
DURATION = 12.0

# One atomic look at the whole state: returns a list of violations (empty when consistent).
CHECK = r"""
local bad = {}
local function add(s) bad[#bad + 1] = s end
local in_room, waiting = {}, {}
local online = 0
for _, n in ipairs(redis.call('SMEMBERS', 'instances')) do
    for _, u in ipairs(redis.call('SMEMBERS', 'instance:' .. n .. ':users')) do
        online = online + 1
        local raw = redis.call('GET', 'user:' .. u)
        if not raw then add('no session for online ' .. u) else
            local d = cjson.decode(raw)
            if d.instance ~= n then add(u .. ' listed on ' .. n .. ' lives elsewhere') end
            if d.roomId then
                if d.partnerId == u then add('self match ' .. u) end
                in_room[u] = d.roomId
                local p = redis.call('GET', 'user:' .. d.partnerId)
                if p then
                    local pd = cjson.decode(p)
                    if pd.roomId ~= d.roomId or pd.partnerId ~= u then
                        add('partner of ' .. u .. ' is not in ' .. d.roomId)
                    end
                else
                    add('partner of ' .. u .. ' is gone')
                end
                if redis.call('SISMEMBER', 'rooms', d.roomId) == 0 then
                    add('room not listed ' .. d.roomId)
                end
            end
        end
    end
end
local w = redis.call('HGETALL', 'waiting')
for k = 1, #w, 2 do
    local u = w[k]
    waiting[u] = true
    if in_room[u] then add(u .. ' waits while in a room') end
    if not redis.call('GET', 'user:' .. u) then add('orphan queue entry ' .. u) end
    local e = cmsgpack.unpack(w[k + 1])
    if not redis.call('ZSCORE', 'queue:' .. e.q, u) then add(u .. ' missing from its queue') end
end
local queued = 0
for _, key in ipairs(redis.call('KEYS', 'queue:*:*:*')) do
    for _, u in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        queued = queued + 1
        if not waiting[u] then add('queue entry without waiting record ' .. u) end
    end
end
local rooms_in_use = {}
for _, r in pairs(in_room) do rooms_in_use[r] = (rooms_in_use[r] or 0) + 1 end
for _, r in ipairs(redis.call('SMEMBERS', 'rooms')) do
    if rooms_in_use[r] ~= 2 then add('room ' .. r .. ' has ' .. tostring(rooms_in_use[r])) end
end
for r, c in pairs(rooms_in_use) do if c ~= 2 then add('room ' .. r .. ' held by ' .. c) end end
return {bad, online, queued, redis.call('SCARD', 'rooms')}
"""


class Player:
    """One client's random life; records what it saw."""

    def __init__(self, k: int, ports: list[int], deadline: float) -> None:
        self.k = k
        self.rnd = random.Random(k)
        self.ports = ports
        self.deadline = deadline
        self.rooms: list[tuple[str, str, str]] = []  # (room, me, partner)
        self.violations: list[str] = []
        self.client: Client | None = None
        self.matches = 0
        self.messages = 0
        self.ids_on: dict[str, tuple[int, float]] = {}  # user id -> (port, when it connected)
        self.matched_at: list[tuple[float, str]] = []  # (when, partner id)
        self.requests = 0  # joins and skips sent on the current connection
        self.answered = 0  # matched frames received on it

    async def connect(self) -> Client:
        """To this player's instance, or the next one up when it is down."""
        n = len(self.ports)
        for i in range(n * 20):
            port = self.ports[(self.k + i) % n]
            try:
                self.client = await Client.connect(port)
            except (ConnectError, Closed):  # that instance is down (killed, not back yet)
                await sleep(0.05)
                continue
            assert self.client.user_id is not None  # connect() waits for ``connected``
            self.ids_on[self.client.user_id] = (port, reactor.seconds())
            self.requests = self.answered = 0
            return self.client
        raise RuntimeError("no instance accepts connections")

    def join(self, c: Client) -> None:
        self.requests += 1
        interests = self.rnd.sample(["a", "b", "c", "d"], self.rnd.choice([0, 0, 1, 2]))
        c.join(
            queue=self.rnd.choice(["moderated", "moderated", "unmoderated"]), interests=interests
        )

    async def run(self) -> None:
        c = await self.connect()
        self.join(c)
        room: str | None = None
        while reactor.seconds() < self.deadline:
            try:
                frame = await c.next(timeout=self.rnd.uniform(0.05, 0.6))
            except defer.TimeoutError:
                frame = None
            except Closed:
                c = await self.connect()
                self.join(c)
                room = None
                continue
            if frame is not None:
                t = frame["type"]
                if t == "matched":
                    d = frame["data"]
                    self.answered += 1
                    # a join sent while a match was on its way ends that room (join in a chat =
                    # skip): only a match nobody asked for is a second room
                    if room is not None and self.answered > self.requests:
                        self.violations.append(f"{c.user_id} matched into {d['roomId']} in {room}")
                    if d["partnerId"] == c.user_id:
                        self.violations.append(f"{c.user_id} matched with itself")
                    room = d["roomId"]
                    assert c.user_id is not None  # connect() waited for ``connected``
                    self.rooms.append((room, c.user_id, d["partnerId"]))
                    self.matched_at.append((reactor.seconds(), d["partnerId"]))
                    self.matches += 1
                    if self.rnd.random() < 0.5:
                        c.send("message", {"content": f"hi from {c.user_id}"})
                elif t in ("partner_skipped", "partner_disconnected"):
                    room = None
                    if self.rnd.random() < 0.8:
                        self.join(c)
                elif t == "message":
                    self.messages += 1
                elif t == "error" and frame["data"]["code"] != "NOT_IN_CHAT":
                    self.violations.append(f"{c.user_id} got {frame}")
                continue
            # idle for a moment: act
            r = self.rnd.random()
            if room is not None and r < 0.45:
                c.send("skip")  # the hub requeues us
                self.requests += 1
                room = None
            elif r < 0.55:
                await c.close()
                c = await self.connect()
                self.join(c)
                room = None
            elif room is None and r < 0.7:
                self.join(c)  # (re)join or change preferences while searching
        await c.close()


async def play(cluster: Cluster, players: list[Player], deadline: float) -> list[Any]:
    """Run the players; atomic snapshots of Redis every 2 s; returns the snapshots."""
    runs = [defer.ensureDeferred(p.run()) for p in players]
    snapshots: list[Any] = []
    while reactor.seconds() < deadline - 1:
        await sleep(2.0)  # the players play on
        snapshots.append(await threads.deferToThread(check, cluster))
    results = await defer.DeferredList(runs, consumeErrors=True)
    failures = [r for ok, r in results if not ok]
    assert not failures, failures[0]
    return snapshots


def tracebacks(cluster: Cluster) -> str:
    out = []
    for inst in cluster.instances:
        log = cluster.logs(inst, tail=100000)
        at = log.find("Traceback")
        if at >= 0:
            out.append(f"--- {inst.name}\n{log[max(0, at - 1500) : at + 3000]}")
    return "\n".join(out)


def check_players(players: list[Player], cluster: Cluster) -> int:
    """What the clients saw; returns the number of matched frames."""
    violations = [v for p in players for v in p.violations]
    assert not violations, (violations[:10], tracebacks(cluster))
    by_room: dict[str, set[tuple[str, str]]] = {}
    for p in players:
        for room, me, partner in p.rooms:
            by_room.setdefault(room, set()).add((me, partner))
    for room, seen in by_room.items():
        # both partners name each other (one may have vanished before its matched arrived)
        assert len(seen) <= 2, (room, seen)
        if len(seen) == 2:
            (a, pa), (b, pb) = sorted(seen)
            assert (pa, pb) == (b, a), (room, seen)
    return sum(p.matches for p in players)


async def check_empty(cluster: Cluster, total_matches: int) -> None:
    """Everybody left: nothing remains."""

    async def emptied() -> bool:
        _bad, online, queued, rooms = await threads.deferToThread(check, cluster)
        return online == queued == rooms == 0

    with contextlib.suppress(AssertionError):  # the assertion below says what is left
        await eventually(emptied, timeout=5)
    bad, online, queued, rooms = await threads.deferToThread(check, cluster)
    assert (bad, online, queued, rooms) == ([], 0, 0, 0)
    r = cluster.redis.command
    stats = dict(zip(*[iter(r("HGETALL", "stats:global"))] * 2, strict=True))
    assert stats[b"online"] == b"0" and stats[b"activeChats"] == b"0"
    assert r("HLEN", "waiting") == 0
    assert r("KEYS", "room:*") == [] and r("KEYS", "user:*") == [] and r("KEYS", "socket:*") == []
    assert r("KEYS", "qi:*") == [] and r("KEYS", "qopen:*") == [] and r("KEYS", "qpending:*") == []
    assert r("KEYS", "conns:*") == []
    assert int(stats[b"totalMatches"]) * 2 >= total_matches


@pytest.fixture
def cluster():
    c = Cluster(3, nginx=False).start()
    yield c
    c.stop()


def check(cluster: Cluster) -> tuple[list[str], int, int, int]:
    bad, online, queued, rooms = cluster.redis.command("EVAL", CHECK, 0)
    return [b.decode() for b in bad], online, queued, rooms


@pytest_twisted.ensureDeferred
async def test_random_joins_and_skips_over_three_instances(cluster: Cluster):
    ports = [i.ws_port for i in cluster.instances]
    deadline = reactor.seconds() + DURATION
    players = [Player(k, ports, deadline) for k in range(N_CLIENTS)]
    snapshots = await play(cluster, players, deadline)
    total_matches = check_players(players, cluster)
    assert total_matches > N_CLIENTS  # the test did exercise matching
    for bad, _online, _queued, _rooms in snapshots:  # Redis consistent at every snapshot
        assert not bad, bad[:10]
    await check_empty(cluster, total_matches)
    for inst in cluster.instances:
        assert inst.alive(), cluster.logs(inst)
    assert not tracebacks(cluster)


@pytest_twisted.ensureDeferred
async def test_random_load_with_an_instance_killed_and_restarted(cluster: Cluster):
    """kill -9 of one instance under load, restarted 3 s later under the same name: the others
    reap it, nobody is matched with its users once it is known dead, nothing is left over."""
    ports = [i.ws_port for i in cluster.instances]
    deadline = reactor.seconds() + DURATION
    players = [Player(k, ports, deadline) for k in range(N_CLIENTS // 2)]
    run = defer.ensureDeferred(play(cluster, players, deadline))
    await sleep(3.0)  # under load
    victim = cluster.instances[2]
    victim.kill()
    killed_at = reactor.seconds()
    await sleep(3.0)  # dead for a while (reaped meanwhile)
    victim.start(wait=False)  # under load: the reactor must not block
    snapshots = await run
    total_matches = check_players(players, cluster)
    dead = {
        u
        for p in players
        for u, (port, since) in p.ids_on.items()
        if port == victim.ws_port and since < killed_at
    }
    assert dead
    ghosts = [
        (round(t - killed_at, 2), partner)
        for p in players
        for t, partner in p.matched_at
        if partner in dead and t > killed_at + 4.0
    ]
    assert not ghosts, ghosts[:5]
    for bad, _online, _queued, _rooms in snapshots:
        assert not bad, bad[:10]
    await check_empty(cluster, total_matches)
    for inst in cluster.instances:
        assert inst.alive(), cluster.logs(inst)
    assert not tracebacks(cluster)  # e.g. a failure an instance logged but no client saw
