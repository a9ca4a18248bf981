"""Hundreds of clients joining, chatting, skipping and leaving at random; invariants checked from
what every client saw and from the engine's state at the end."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

from tests.conftest import ServerHandle
from tests.harness import eventually, sleep
from tests.wsclient import Client, Closed

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

MODES = ("text", "voice", "video")


@dataclass
class Model:
    """One simulated user and everything it observed."""

    client: Client
    mode: str
    state: str = "idle"  # idle | pending | searching | chatting | closed
    room: str | None = None
    partner: str | None = None
    rooms: set[str] = field(default_factory=set)
    sent: dict[str, int] = field(default_factory=dict)  # room -> messages sent
    last_seq: dict[str, int] = field(default_factory=dict)  # room -> last seq received
    received: dict[str, int] = field(default_factory=dict)  # room -> messages received
    violations: list[str] = field(default_factory=list)

    @property
    def uid(self) -> str:
        assert self.client.user_id is not None
        return self.client.user_id


class World:
    def __init__(self, server: ServerHandle, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.models: dict[str, Model] = {}
        self.matches: dict[str, list[tuple[str, str, bool]]] = {}  # room -> (user, partner, init)
        self.readers: list[defer.Deferred] = []

    async def add(self) -> Model:
        client = await self.server.client()
        m = Model(client, self.rng.choice(MODES))
        self.models[m.uid] = m
        self.readers.append(defer.ensureDeferred(self.read(m)))
        return m

    async def read(self, m: Model) -> None:
        while True:
            try:
                frame = await m.client.next(timeout=60)
            except Closed:
                m.state = "closed"
                return
            self.observe(m, frame)

    def observe(self, m: Model, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "matched":
            data = frame["data"]
            if m.state == "chatting":
                m.violations.append(f"matched into {data['roomId']} while in {m.room}")
            if data["partnerId"] == m.uid:
                m.violations.append("matched with self")
            if data["roomId"] in m.rooms:
                m.violations.append("same room twice")
            m.state, m.room, m.partner = "chatting", data["roomId"], data["partnerId"]
            m.rooms.add(m.room)
            self.matches.setdefault(m.room, []).append(
                (m.uid, data["partnerId"], data["isInitiator"])
            )
        elif kind == "searching":
            if m.state == "pending":
                m.state = "searching"
        elif kind in ("partner_skipped", "partner_disconnected"):
            if m.state == "chatting":
                m.state, m.room, m.partner = "idle", None, None
        elif kind == "message":
            room, sender, seq = frame["data"]["content"].split("|")
            if room not in m.rooms:
                m.violations.append(f"message for a room never joined: {room}")
            if self.models[sender].uid == m.uid:
                m.violations.append("own message echoed")
            last = m.last_seq.get(room, -1)
            if int(seq) != last + 1:
                m.violations.append(f"room {room}: seq {seq} after {last}")
            m.last_seq[room] = int(seq)
            m.received[room] = m.received.get(room, 0) + 1
        elif kind == "error":
            data = frame["data"]
            if data["code"] != "NOT_IN_CHAT":
                m.violations.append(f"error {data}")

    async def settled(self) -> bool:
        """Nothing in flight: no request unanswered, both sides of every chat agree and have
        every message, no vanished user still counted online."""
        live = [m for m in self.models.values() if m.state != "closed"]
        for m in live:
            if m.state == "pending":
                return False
            if m.state == "chatting":
                p = self.models[m.partner] if m.partner else None
                if p is None or p.state != "chatting" or p.room != m.room:
                    return False
                if p.received.get(p.room or "", 0) != m.sent.get(p.room or "", 0):
                    return False
        return (await self.server.engine.stats()).total_online == len(live)

    def act(self, m: Model) -> None:
        r = self.rng.random()
        c = m.client
        if m.state == "closed":
            return
        if m.state == "idle" or (m.state == "chatting" and r < 0.15):
            m.state = "pending"
            if self.rng.random() < 0.5:
                c.join(mode=m.mode)
            else:
                c.send("skip")
        elif m.state == "chatting" and m.room:
            seq = m.sent.get(m.room, 0)
            m.sent[m.room] = seq + 1
            c.send("message", {"content": f"{m.room}|{m.uid}|{seq}"})
            if r < 0.5:
                c.send("typing", {"isTyping": r < 0.25})


@pytest_twisted.ensureDeferred
async def test_random_joins_chats_skips_and_leaves(make_server):
    # no resume grace: a dropped user leaves at once, as the model expects (tests/test_resume.py)
    server = await make_server(rematch_cooldown=0, resume_grace=0)
    rng = random.Random(20261126)
    world = World(server, rng)
    for _ in range(240):
        m = await world.add()
        m.client.join(mode=m.mode)
        m.state = "pending"
    for _step in range(60):
        for m in list(world.models.values()):
            if rng.random() < 0.4:
                world.act(m)
        if rng.random() < 0.5:  # churn: someone vanishes, someone arrives
            victim = rng.choice([m for m in world.models.values() if m.state != "closed"])
            if rng.random() < 0.5:
                victim.client.drop()
            else:
                assert victim.client.proto is not None
                victim.client.proto.sendClose(1000)
            newcomer = await world.add()
            newcomer.client.join(mode=newcomer.mode)
            newcomer.state = "pending"
        await sleep(0.02)  # a step of the random walk

    # quiesce: everything in flight has landed, then check
    await eventually(world.settled, timeout=15, what="every request answered, every chat agreed")
    live = [m for m in world.models.values() if m.state != "closed"]
    problems = [f"{m.uid[:8]}: {v}" for m in world.models.values() for v in m.violations]
    assert not problems, problems[:20]

    for room, seen in world.matches.items():
        assert len(seen) <= 2, (room, seen)
        if len(seen) == 2:
            (u1, p1, i1), (u2, p2, i2) = seen
            assert (u1, u2) == (p2, p1) and i1 != i2, seen
        else:  # the other side must have been gone
            (_user, partner, _) = seen[0]
            assert world.models[partner].state == "closed", seen

    for m in live:
        if m.state == "chatting":
            assert m.partner is not None and m.room is not None  # set with the state
            other = world.models[m.partner]
            assert other.state == "chatting" and other.room == m.room, (m, other)
            # a room both sides still hold got every message, in order (checked above)
            assert other.received.get(m.room, 0) == m.sent.get(m.room, 0)

    searching = [m for m in live if m.state == "searching"]
    per_mode = {mode: [m for m in searching if m.mode == mode] for mode in MODES}
    for mode, waiting in per_mode.items():
        assert len(waiting) <= 1, f"{len(waiting)} compatible users left waiting in {mode}"
    assert not [m for m in live if m.state == "pending"]

    stats = await server.engine.stats()
    assert stats.total_online == len(live)
    assert stats.in_queue == len(searching)
    assert stats.active_chats == len([m for m in live if m.state == "chatting"]) // 2
    assert len(world.matches) > 200  # the run really exercised matching
