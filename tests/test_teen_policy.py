"""The teen policy through the real server: one strong grooming signal is blocked with a 'high'
warning and never reaches the teen; ordinary teen small talk passes; adults are not held to it."""

from __future__ import annotations

import pytest_twisted

from tests.test_screening import warning

SMALL_TALK = [
    "hiii whats up",
    "nm just got home from school, so tired",
    "my mom is home so i cant be loud lol",
    "i have a math test tomorrow and i havent studied",
    "do u play minecraft? i just built a huge castle",
    "my little sister is 9 and she keeps stealing my hoodies",
    "i took a pic of my cat sleeping in the sink its so funny",
    "im going to the mall with my friends on saturday",
    "my parents are super strict about screen time",
    "where are you from? im from canada",
    "i never turn my camera on in class, too awkward",
    "that movie was so good, the ending killed me",
]


@pytest_twisted.ensureDeferred
async def test_secrecy_request_to_a_teen_is_blocked_at_once(server):
    stranger, teen = await server.pair(age="teen")
    stranger.send("message", {"content": "hey whats up"})
    assert (await teen.expect("message"))["data"]["content"] == "hey whats up"
    stranger.send("message", {"content": "dont tell ur parents about me ok? its our thing"})
    await warning(stranger, "high")
    stranger.send("message", {"content": "so what games do u play"})
    assert (await teen.expect("message"))["data"]["content"] == "so what games do u play"
    assert not [f for f in teen.received if "parents" in str(f)]


@pytest_twisted.ensureDeferred
async def test_each_strong_signal_alone_is_blocked(server):
    stranger, teen = await server.pair(age="teen")
    lines = [
        "is anyone else home with u rn",  # alone
        "what school do u go to",  # location / school
        "lets move this to telegram",  # another app
        "we should meet up irl this weekend",  # meeting
        "turn ur cam on for a sec",  # camera
    ]
    for line in lines:
        stranger.send("message", {"content": line})
        await warning(stranger, "high")
    stranger.send("message", {"content": "ok nvm"})
    assert (await teen.expect("message"))["data"]["content"] == "ok nvm"
    assert [f["data"]["content"] for f in teen.received if f["type"] == "message"] == ["ok nvm"]


@pytest_twisted.ensureDeferred
async def test_teen_small_talk_passes_without_warnings(server):
    a, b = await server.pair(age="teen")
    for line in SMALL_TALK:
        a.send("message", {"content": line})
        assert (await b.expect("message"))["data"]["content"] == line
    await a.quiet(0.2)
    assert not [f for f in a.received if f["type"] == "moderation_warning"]


@pytest_twisted.ensureDeferred
async def test_asking_a_teen_for_nudes_is_zero_tolerance(server):
    stranger, teen = await server.pair(age="teen")
    stranger.send("message", {"content": "send me a pic in ur underwear"})
    await warning(stranger, "high")
    assert await stranger.closed == 1008
    await teen.expect("partner_disconnected")
    assert not [f for f in teen.received if f["type"] == "message"]


@pytest_twisted.ensureDeferred
async def test_adults_are_not_held_to_the_one_signal_rule(server):
    a, b = await server.pair()
    a.send("message", {"content": "we should meet up for coffee sometime"})
    assert (await b.expect("message"))["data"]["content"] == "we should meet up for coffee sometime"
    await a.quiet(0.2)
    assert not [f for f in a.received if f["type"] == "moderation_warning"]
