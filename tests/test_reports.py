"""Reporting a partner, through the real server with real WebSocket clients, on both engines
(docs/protocol.md "Reports"): the stored record and its transcript, the errors, the grace period
after a chat (driven by a task.Clock), the distinct-address ban, and a report across two
instances."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred

from anygle.console import build_namespace
from anygle.engine.base import EngineConfig
from anygle.engine.memory import MAX_REPORTS, MemoryEngine
from anygle.limits import MESSAGE_LIMITS
from anygle.reports import BAN_REASON, REPORT_GRACE, TRANSCRIPT_MESSAGES, Report, ReportOutcome
from tests.conftest import ServerHandle
from tests.test_http import get
from tests.wsclient import Client


async def console(server: ServerHandle, helper: str, *args: Any) -> Any:
    """Call a console helper as an operator would (its answer, or its Deferred's)."""
    value = build_namespace(server.service)[helper](*args)
    return await value if isinstance(value, Deferred) else value


async def stats(server: ServerHandle) -> dict[str, Any]:
    code, _, body = await get(server.http_port, "/stats")
    assert code == 200
    return json.loads(body)["reports"]


async def say(sender: Client, receiver: Client, *texts: str) -> None:
    for text in texts:
        sender.send("message", {"content": text})
        assert (await receiver.expect("message"))["data"]["content"] == text


async def report(client: Client, reason: str = "spam", **extra: Any) -> str:
    client.send("report", {"reason": reason, **extra})
    frame = await client.expect("report_received")
    assert set(frame["data"]) == {"reportId"}
    return frame["data"]["reportId"]


@pytest_twisted.ensureDeferred
async def test_report_stores_the_partners_last_messages(make_server, engine_name, request):
    server = await make_server()
    a, b = await server.pair()
    room = next(f for f in b.received if f["type"] == "matched")["data"]["roomId"]
    texts = [f"a says {i}" for i in range(TRANSCRIPT_MESSAGES + 5)]
    await say(a, b, *texts)
    await say(b, a, "b's own words are not a's")
    before = time.time() * 1000
    rid = await report(b, "harassment", details="  kept insulting me  ")

    b.send("report", {"reason": "spam"})  # one report per reporter per room
    assert (await b.error("ALREADY_REPORTED"))["data"]["reportId"] == rid
    await a.quiet(0.2)  # the reported user is told nothing

    record = await console(server, "report", rid)
    messages = record.pop("messages")
    assert [m["content"] for m in messages] == texts[-TRANSCRIPT_MESSAGES:]
    assert all(set(m) == {"id", "content", "timestamp"} for m in messages)
    assert before - 1000 <= record.pop("createdAt") <= time.time() * 1000 + 1000
    assert record == {
        "reportId": rid,
        "reporter": b.user_id,
        "reporterIp": "127.0.0.1",
        "reported": a.user_id,
        "reportedIp": "127.0.0.1",
        "reason": "harassment",
        "details": "kept insulting me",
        "roomId": room,
    }
    [line] = await console(server, "reports")
    assert line["reportId"] == rid and line["messages"] == TRANSCRIPT_MESSAGES
    assert line["reported"] == a.user_id and line["details"] == "kept insulting me"
    assert await console(server, "report", "no-such-report") is None
    assert await stats(server) == {"received": 1, "blocks": 0, "byReason": {"harassment": 1}}
    _, _, metrics = await get(server.http_port, "/metrics")
    assert b'anygle_reports_received_total{reason="harassment"} 1.0' in metrics
    assert b"anygle_report_blocks_total 0.0" in metrics

    if engine_name == "redis":  # the documented keys and their TTLs
        redis = request.getfixturevalue("redis")
        retention = server.service.settings.report_retention * 1000
        assert retention - 60_000 < int(redis.client("PTTL", f"report:{rid}")) <= retention
        assert redis.client("HGET", f"report:{rid}", "reported") == a.user_id
        assert redis.client("ZSCORE", "reports", rid)
        assert redis.client("GET", f"report:once:{room}:{b.user_id}") == rid
        assert 0 < int(redis.client("PTTL", f"reports:against:{a.user_id}")) <= 3_600_000
        assert redis.client("ZRANGE", f"reports:against:{a.user_id}", 0, -1) == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_bad_reports_and_nobody_to_report(make_server):
    server = await make_server(message_limits=dict(MESSAGE_LIMITS))
    for data in (
        None,
        {},
        {"reason": "rude"},
        {"reason": 3},
        {"reason": "spam", "details": 7},
        {"reason": "spam", "details": "x" * 501},
    ):
        bad = await server.client()  # each on its own connection: its own rate limit
        bad.send("report", data)
        await bad.error("INVALID_DATA")
    c = await server.client()
    c.send("report", {"reason": "harassment"})  # before any join
    await c.error("NOT_IN_CHAT")
    c.join()
    await c.expect("searching")
    for _ in range(2):  # valid, but nobody to report
        c.send("report", {"reason": "other", "details": "x" * 500})
        await c.error("NOT_IN_CHAT")
    # rate-limited like the other messages: a burst of 3, then one every 5 s
    c.send("report", {"reason": "spam"})
    await c.error("RATE_LIMITED")


@pytest_twisted.ensureDeferred
async def test_last_partner_is_reportable_for_60_s_after_the_chat(make_server):
    clock = task.Clock()
    clock.advance(reactor.seconds())
    server = await make_server(hub_clock=clock)
    # the partner disconnects; 59 s later they can still be reported, with what they said
    a, b = await server.pair()
    await say(a, b, "you are so boring")
    await a.close()
    await b.expect("partner_disconnected")
    clock.advance(REPORT_GRACE - 1)
    rid = await report(b, "hate")
    record = await console(server, "report", rid)
    assert record["reported"] == a.user_id and record["reportedIp"] is None  # gone by now
    assert [m["content"] for m in record["messages"]] == ["you are so boring"]
    # the reporter skips; just over 60 s later neither of the two can report the other
    e, f = await server.pair()
    await say(e, f, "hello")
    f.send("skip")
    await e.expect("partner_skipped")
    clock.advance(REPORT_GRACE / 2)
    server.hub.forget_ended_chats()
    assert server.hub.sessions[e.user_id].last_chat is not None
    clock.advance(REPORT_GRACE / 2 + 1)
    for client in (e, f):
        client.send("report", {"reason": "spam"})
        await client.error("NOT_IN_CHAT")
    # and the transcripts are dropped by the periodic sweep
    server.hub.forget_ended_chats()
    assert all(s.last_chat is None for s in server.hub.sessions.values())
    assert not server.hub._ended_chats


async def reported_in_turn(server: ServerHandle, x: Client, ips: list[str]) -> list[Client]:
    """``x`` waits; a reporter from each address meets x and reports; x skips to the next one."""
    x.join()
    await x.expect("searching")
    reporters = []
    for i, ip in enumerate(ips):
        r = await server.client(headers={"X-Forwarded-For": ip})
        reporters.append(r)
        r.join()
        await x.expect("matched")
        await r.expect("matched")
        await say(x, r, f"buy followers {i}")
        if i == 1:  # reported after the chat ended: the last partner
            x.send("skip")
            await r.expect("partner_skipped")
            await report(r)
        else:
            await report(r)
            if i < len(ips) - 1:
                x.send("skip")
                await r.expect("partner_skipped")
    return reporters


@pytest_twisted.ensureDeferred
async def test_three_reporters_from_distinct_addresses_ban(make_server, engine_name, request):
    server = await make_server()
    # three reports from one address: counted once, no ban
    y = await server.client()
    await reported_in_turn(server, y, ["198.51.100.9"] * 3)
    y.send("ping")
    await y.expect("pong")
    assert await server.engine.get_ban(y.user_id, None) is None
    await y.close()  # out of the way
    assert await stats(server) == {"received": 3, "blocks": 0, "byReason": {"spam": 3}}
    # three distinct addresses (IPv6 too): banned, told, closed; the last partner is told
    x = await server.client()
    reporters = await reported_in_turn(server, x, ["198.51.100.1", "198.51.100.2", "2001:db8::3"])
    frame = await x.error("BANNED")
    assert BAN_REASON in frame["data"]["message"]
    assert await x.closed == 1008
    await reporters[-1].expect("partner_disconnected")
    assert await server.engine.get_ban(x.user_id, None) == BAN_REASON
    assert await stats(server) == {"received": 6, "blocks": 1, "byReason": {"spam": 6}}
    records = await console(server, "reports", 3)
    assert [r["reporter"] for r in records] == [r.user_id for r in reversed(reporters)]
    if engine_name == "redis":
        redis = request.getfixturevalue("redis")
        ttl = int(redis.client("PTTL", f"banned:users:{x.user_id}"))
        assert 86_400_000 - 60_000 < ttl <= 86_400_000


@pytest.mark.parametrize("engine_name", ["redis"])
@pytest_twisted.ensureDeferred
async def test_reporter_and_reported_on_two_instances(make_server):
    one, two = await make_server(), await make_server()
    x = await one.client()
    x.join()
    await x.expect("searching")
    reporters = []
    for i, ip in enumerate(["198.51.100.1", "198.51.100.2", "198.51.100.3"]):
        r = await two.client(headers={"X-Forwarded-For": ip})
        reporters.append(r)
        r.join()
        await x.expect("matched")
        await r.expect("matched")
        await say(x, r, f"cross {i}", f"instance {i}")
        rid = await report(r, "sexual")
        # the transcript is there although x's messages were sent through another instance
        for instance in (one, two):
            record = await console(instance, "report", rid)
            assert record["reported"] == x.user_id and record["reporter"] == r.user_id
            assert [m["content"] for m in record["messages"]] == [f"cross {i}", f"instance {i}"]
        if i < 2:
            x.send("skip")
            await r.expect("partner_skipped")
    # the third report, on instance two, bans x, connected to instance one
    await x.error("BANNED")
    assert await x.closed == 1008
    await reporters[-1].expect("partner_disconnected")


def test_memory_engine_keeps_reports_bounded_and_for_their_retention():
    clock = task.Clock()
    engine = MemoryEngine(EngineConfig(instance_id="t", report_retention=100.0), clock)

    def file(n: int) -> str:
        r = Report(f"r{n}", f"u{n}", "192.0.2.1", "192.0.2.1", "x", f"room{n}", "spam", None, 0)
        outcome = engine.report(r).result  # the memory engine answers at once
        assert isinstance(outcome, ReportOutcome)
        return outcome.report_id

    file(0)
    clock.advance(60)
    file(1)
    clock.advance(50)  # r0 is past its retention
    assert engine.get_report("r0").result is None
    stored = engine.reports(5).result
    assert isinstance(stored, list)
    assert [r["reportId"] for r in stored] == ["r1"]
    dup = Report("r9", "u1", "192.0.2.1", "192.0.2.1", "x", "room1", "spam", None, 0)
    outcome = engine.report(dup).result
    assert isinstance(outcome, ReportOutcome) and outcome.duplicate
    for n in range(2, MAX_REPORTS + 10):
        file(n)
    assert len(engine.stored_reports) == MAX_REPORTS == len(engine.reported_rooms)
    assert engine.get_report("r1").result is None  # the oldest went first


@pytest_twisted.ensureDeferred
async def test_reports_export_for_labelling_and_train_extra_reads_it(server, tmp_path):
    """``export_reports`` writes the reported transcripts in the training format, labelled '?';
    the trainer's loader skips the '?' lines and reads the ones an operator labelled."""
    from anygle.moderation.evaluation import load_corpus
    from anygle.reports import UNLABELLED

    a, b = await server.pair()
    await say(a, b, "hello", "what time do ur parents get home")
    await report(b, "sexual")
    path = tmp_path / "reports.tsv"
    answer = await console(server, "export_reports", str(path))
    assert answer.startswith("2 messages of 1 reports")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("#") and len(lines) == 3
    assert [ln.split("\t")[0] for ln in lines[1:]] == [UNLABELLED, UNLABELLED]
    assert lines[2].endswith("\twhat time do ur parents get home")
    assert load_corpus(path, skip=frozenset({UNLABELLED})) == []
    path.write_text("\n".join([lines[0], lines[1].replace("?", "clean", 1),
                               lines[2].replace("?", "grooming", 1)]) + "\n")  # fmt: skip
    cases = load_corpus(path, skip=frozenset({UNLABELLED}))
    assert [(c.label, c.messages) for c in cases] == [
        ("clean", ("hello",)),
        ("grooming", ("what time do ur parents get home",)),
    ]
