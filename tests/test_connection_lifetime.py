"""What a closed connection leaves behind: nothing, and at once.

The garbage collector runs rarely on purpose (``anygle.tap.tune_gc``), so whatever a closed
connection leaves in a reference cycle stays in memory until a full collection: under churn
(thousands of short chats a minute) that grew the process by about 18 MB a round of 1,000
connections (``python -m bench churn``).  These tests hold the garbage collector off and check
that reference counting alone frees the protocol and the session.
"""

from __future__ import annotations

import gc
import weakref

import pytest_twisted

from tests.harness import eventually


@pytest_twisted.ensureDeferred
async def test_closed_connections_are_freed_by_reference_counting(server):
    a, b = await server.pair(queue="unmoderated")
    a.send("message", {"content": "hi there"})
    await b.expect("message")
    b.send("skip")  # the chat ends and becomes reportable (a transcript is kept)
    await a.expect("partner_skipped")
    refs = []
    for proto in server.service.factory.connections:
        refs += [weakref.ref(proto), weakref.ref(proto.session)]
    assert len(refs) == 4
    del proto
    gc.collect()
    gc.disable()
    try:
        await a.close()
        await b.close()
        await eventually(lambda: not server.service.factory.connections, what="closed")
        await eventually(
            lambda: all(r() is None for r in refs), what="protocols and sessions freed"
        )
    finally:
        gc.enable()


@pytest_twisted.ensureDeferred
async def test_a_connected_users_last_chat_stays_reportable(server):
    """The session (not a list beside it) holds the chat that ended: freeing closed ones
    must not forget it for the user who is still here."""
    a, b = await server.pair(queue="unmoderated")
    b.send("message", {"content": "rude words"})
    await a.expect("message")
    b.send("skip")
    await a.expect("partner_skipped")
    await b.close()
    server.service.hub.forget_ended_chats()  # within the grace period: nothing is forgotten
    a.send("report", {"reason": "harassment"})
    got = await a.expect("report_received")
    assert got["data"]["reportId"]


@pytest_twisted.ensureDeferred
async def test_a_report_sent_just_before_leaving_is_kept(server):
    """Freeing a closed connection at once must not drop what it asked for last: a report
    sent right before the socket closes runs after the close (in turn) and is stored."""
    a, b = await server.pair(queue="unmoderated")
    b.send("message", {"content": "rude words"})
    await a.expect("message")
    b.send("skip")
    await a.expect("partner_skipped")
    # a join first: with Redis it waits for the engine, so the report and then the close
    # come while it is pending, and the report runs after the close
    a.join(queue="unmoderated")
    a.send("report", {"reason": "harassment"})
    await a.close()

    async def stored() -> bool:
        return bool(await server.service.hub.reports(10))

    await eventually(stored, what="the report stored")
    (report,) = await server.service.hub.reports(10)
    assert report["reported"] == b.user_id
