"""The message path in one process, stage by stage: what a chat message costs in our own code.

``python -m bench.msgpath [--messages N] [--lines PATH]``

No sockets and no Autobahn: a hub on the memory engine with two sessions in a chat, whose
clients encode what they are sent (as the protocol does before Autobahn frames it), fed the
frames a client sends -- the varied chat lines of ``bench/data/chat-lines.tsv``
(``bench/chatlines.py``) and the relay scenario's one repeated line.  Each row is timed as
process CPU time per message, cumulatively by stage: decoding and validation, the rate limit,
then the whole of ``Hub.message`` (the message frame, moderation, the engine, the transcript,
the encoding of the delivered frame), and moderation alone (``Screening.verdict``).  What the
relay scenario adds to these is Autobahn's own frame handling (the bare relay's cost) and the
reactor: see docs/performance.md for the budget they make together.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
from twisted.internet import task

from anygle import validate, wire
from anygle.clientip import ClientAddress
from anygle.engine.base import EngineConfig
from anygle.engine.memory import MemoryEngine
from anygle.hub import Hub
from anygle.limits import MESSAGE_LIMITS, ConnectionLimits
from anygle.model import Preferences
from anygle.moderation import Classifier
from anygle.screening import Screening
from anygle.session import Session
from bench import chatlines
from bench.suite import CONTENT

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = (  # row, queue type, age category, lines
    ("adult-off, one line", "unmoderated", "adult", None),
    ("adult-on, one line", "moderated", "adult", None),
    ("adult-off, varied", "unmoderated", "adult", "adult"),
    ("adult-on, varied", "moderated", "adult", "adult"),
    ("teen, varied", "moderated", "teen", "teen"),
)


class _Client:
    """A connection as the hub sees it: what it is sent is encoded, as the protocol does."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, frame: dict[str, Any]) -> None:
        wire.encode_binary(frame)
        self.sent += 1

    def broadcast(self, message: Any) -> None:
        self.sent += 1

    def close(self, code: int, reason: str) -> None:
        pass


def _run(coro: Any) -> Any:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the memory engine should complete at once")


@functools.cache
def classifier() -> Classifier:
    """One for every hub: loading the rules and the model takes a second."""
    return Classifier()


def matched(queue: str, age: str) -> tuple[Hub, tuple[Session, Session], task.Clock]:
    """A fresh hub on the memory engine and two users it matched."""
    clock = task.Clock()
    clock.advance(1_000_000)
    engine = MemoryEngine(EngineConfig(instance_id="msgpath"), clock)
    hub = Hub(engine, clock, screening=Screening(classifier(), engine))
    engine.start(hub)
    return rematched(hub, (), clock, queue, age)


def rematched(
    hub: Hub, users: tuple[Session, ...], clock: task.Clock, queue: str, age: str
) -> tuple[Hub, tuple[Session, Session], task.Clock]:
    """A new chat: the two users leave, two others connect and are matched (the strangers
    of the next chat)."""
    for s in users:
        hub.close(s)
    n = len(hub.sessions) + len(users)
    a, b = (
        _run(hub.open(_Client(), ClientAddress(ip, ip, (ip,))))
        for ip in (f"10.0.{n // 250}.{n % 250 + 1}", f"10.1.{n // 250}.{n % 250 + 1}")
    )
    prefs = Preferences(age_category=age, mode="text", queue_type=queue, interests=())
    hub.join(a, prefs)
    hub.join(b, prefs)
    hub.engine.tick(clock.seconds())
    if a.partner_id != b.user_id:
        raise RuntimeError("the two users were not matched")
    return hub, (a, b), clock


CHAT = 50  # messages per chat, as in the relay scenario's varied rows


def measure(queue: str, age: str, texts: list[str], repeat: int = 5) -> dict[str, float]:
    """CPU µs per message: decode+validate, + limits, + Hub.message; and Screening.verdict.
    The two users take turns, and start a new chat every ``CHAT`` messages (or when
    moderation ended theirs), as people do; each stage is run ``repeat`` times, each time on
    a fresh hub, and its fastest run kept (the machine is shared)."""
    payloads = [msgpack.packb({"type": "message", "data": {"content": t}}) for t in texts]
    limits = ConnectionLimits({k: (1e12, 1e12) for k in MESSAGE_LIMITS})
    n = len(payloads)
    cpu = time.process_time
    out: dict[str, float] = {}

    def decode(p: bytes) -> tuple[str, str | None]:
        """``(content, id)``, as the protocol hands them to the hub."""
        frame = wire.decode(p, True)
        message: tuple[str, str | None] = validate.message(frame.get("data"))
        return message

    def stage(name: str, step: Any) -> None:
        best = float("inf")
        for _ in range(repeat):
            hub, users, clock = matched(queue, age)
            t0 = cpu()
            for i, (p, text) in enumerate(zip(payloads, texts, strict=True)):
                if i % CHAT == 0 or users[0].partner_id is None:
                    hub, users, clock = rematched(hub, users, clock, queue, age)
                step(hub, users[i & 1], clock, p, text)
                clock.advance(0.05)
            best = min(best, cpu() - t0)
        out[name] = round(best / n * 1e6, 2)

    def decoded(hub: Hub, s: Session, clock: task.Clock, p: bytes, text: str) -> None:
        decode(p)

    def limited(hub: Hub, s: Session, clock: task.Clock, p: bytes, text: str) -> None:
        decode(p)
        limits.allow("message", clock.seconds())

    def whole(hub: Hub, s: Session, clock: task.Clock, p: bytes, text: str) -> None:
        content, client_id = decode(p)
        limits.allow("message", clock.seconds())
        hub.message(s, content, client_id)

    def new_chats(hub: Hub, s: Session, clock: task.Clock, p: bytes, text: str) -> None:
        pass

    def moderation(hub: Hub, s: Session, clock: task.Clock, p: bytes, text: str) -> None:
        assert hub.screening is not None
        hub.screening.verdict(s, text, clock.seconds())

    stage("chats_us", new_chats)
    stage("decode_validate_us", decoded)
    stage("limits_us", limited)
    stage("message_path_us", whole)
    stage("moderation_us", moderation)
    chats = out.pop("chats_us")
    out["message_path_us"] = round(out["message_path_us"] - chats, 2)
    out["decode_validate_us"] = round(out["decode_validate_us"] - chats, 2)
    out["limits_us"] = round(out["limits_us"] - chats - out["decode_validate_us"], 2)
    out["moderation_us"] = round(out["moderation_us"] - chats, 2)
    parts = out["decode_validate_us"] + out["limits_us"] + out["moderation_us"]
    out["hub_us"] = round(out["message_path_us"] - parts, 2)
    out["new_chat_us_per_message"] = round(chats / n * 1e6, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.msgpath", description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=20_000, help="messages per row")
    p.add_argument("--lines", default=str(chatlines.LINES))
    p.add_argument("--no-json", action="store_true")
    a = p.parse_args(argv)
    rows = []
    for name, queue, age, lines in ROWS:
        texts = (
            chatlines.stream(chatlines.load(lines, a.lines), a.messages, name)
            if lines
            else [CONTENT] * a.messages
        )
        measure(queue, age, texts[: a.messages // 10])  # warm the caches a real server has warm
        r = {"row": name, **measure(queue, age, texts)}
        rows.append(r)
        print(f"{name}: {r}", file=sys.stderr)
    cols = ("decode_validate_us", "limits_us", "moderation_us", "hub_us", "message_path_us")
    print("| row | decode + validate | rate limit | moderation | hub, engine, encode | total |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['row']} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |")
    if not a.no_json:
        RESULTS.mkdir(exist_ok=True)
        with open(RESULTS / "msgpath.json", "w") as f:
            json.dump({"rows": rows, "messages": a.messages, "pid": os.getpid()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
