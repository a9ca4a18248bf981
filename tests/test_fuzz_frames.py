"""10,000 malformed frames against a live server while other users keep chatting."""

from __future__ import annotations

import json
import random

import msgpack
import pytest
import pytest_twisted
from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from zope.interface import provider

from tests.harness import eventually
from tests.wsclient import Client

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

TYPES = [
    "join",
    "message",
    "skip",
    "typing",
    "video_toggle",
    "audio_toggle",
    "offer",
    "answer",
    "ice_candidate",
    "ping",
    "",
    "JOIN",
    "__class__",
    "handle_join",
    "x" * 300,
]


def _junk(rng: random.Random, depth: int = 0):
    pick = rng.randrange(12 if depth < 3 else 8)
    return [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.randint(-(2**63), 2**64 - 1),
        lambda: rng.random() * 1e308 * rng.choice([1, -1, float("inf")]),
        lambda: "".join(
            chr(rng.randrange(0x110000 - 0x800) if rng.random() < 0.1 else rng.randrange(32, 127))
            for _ in range(rng.randrange(40))
        ),
        lambda: rng.randbytes(rng.randrange(40)),
        lambda: msgpack.ExtType(rng.randrange(128), rng.randbytes(4)),
        lambda: "",
        lambda: [_junk(rng, depth + 1) for _ in range(rng.randrange(5))],
        lambda: {str(_junk(rng, depth + 1))[:20]: _junk(rng, depth + 1) for _ in range(3)},
        lambda: {"content": _junk(rng, depth + 1), "isTyping": _junk(rng, depth + 1)},
        lambda: {
            "ageCategory": rng.choice(["teen", "adult", 1]),
            "mode": _junk(rng, depth + 1),
            "interests": [_junk(rng, depth + 1)] * rng.randrange(15),
        },
    ][pick]()


def malformed(rng: random.Random) -> tuple[bytes, bool]:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 200)), True
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 200)).decode("latin-1").encode(), False
    if kind == 2:
        depth = rng.randrange(100, 5000)
        return b"\x91" * depth + b"\xc0", True
    if kind == 3:
        return ("[" * rng.randrange(100, 5000)).encode(), False
    if kind == 4:
        return msgpack.packb({"type": "message", "data": {"content": "x" * 16385}}), True
    if kind == 5:
        frame = {"type": rng.choice(TYPES), "data": _junk(rng)}
        return msgpack.packb(frame, default=repr, unicode_errors="surrogatepass"), True
    if kind == 6:
        frame = {"type": rng.choice(TYPES), "data": _junk(rng)}
        return json.dumps(frame, default=repr).encode("utf-8", "surrogatepass"), False
    return msgpack.packb(_junk(rng), default=repr, unicode_errors="surrogatepass"), True


@pytest_twisted.ensureDeferred
async def test_ten_thousand_malformed_frames_while_others_chat(server):
    errors: list[dict] = []

    @provider(ILogObserver)
    def observer(event: LogEvent) -> None:
        if event.get("log_failure") is not None or event.get("log_level") in (
            LogLevel.error,
            LogLevel.critical,
        ):
            errors.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        pairs = [await server.pair() for _ in range(5)]
        rng = random.Random(7)
        sent = 0
        chats = 0
        fuzzer: Client | None = None
        fuzzers: list[Client] = []
        while sent < 10_000:
            if fuzzer is None or fuzzer.closed.called:
                fuzzer = await Client.connect(server.ws_port)
                fuzzers.append(fuzzer)
            for _ in range(10):
                payload, binary = malformed(rng)
                fuzzer.send_raw(payload, binary=binary)
                sent += 1
            # the chatters keep talking throughout
            for i, (a, _) in enumerate(pairs):
                a.send("message", {"content": f"{chats}-{i}"})
            for i, (_, b) in enumerate(pairs):
                got = await b.expect("message", timeout=10)
                assert got["data"]["content"] == f"{chats}-{i}"
            chats += 1
        if fuzzer is not None:
            await fuzzer.close()
        # still serving: a newcomer gets matched and chats
        x, y = await server.pair()
        x.send("message", {"content": "after the storm"})
        assert (await y.expect("message"))["data"]["content"] == "after the storm"
        # every fuzzer connection is gone on the server too (anything it logged, it has)
        connections = server.service.factory.connections
        await eventually(lambda: len(connections) == 2 * len(pairs) + 2, what="fuzzers gone")
    finally:
        globalLogPublisher.removeObserver(observer)
    assert sent >= 10_000 and chats >= 1000
    answered = [f for c in fuzzers for f in c.received if f["type"] == "error"]
    codes = {f["data"]["code"] for f in answered}
    assert len(answered) > 5000, len(answered)  # the server really read and answered them
    assert {"BAD_FRAME", "INVALID_DATA", "UNKNOWN_TYPE", "FRAME_TOO_LARGE"} <= codes, codes
    assert not errors, [e.get("log_format") for e in errors[:5]]
