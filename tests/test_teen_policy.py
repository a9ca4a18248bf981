"""The teen policy through the real server: one clear grooming move is blocked with a 'high'
warning and never reaches the teen; a grey move reaches the teen with a safety notice and the
next move is blocked; ordinary teen small talk passes; adults are not held to it; bans are
proportionate (a shared address is never banned by moderation)."""

from __future__ import annotations

import pytest_twisted

from tests.conftest import ServerHandle
from tests.test_reports import console
from tests.test_screening import delivered, warning
from tests.wsclient import Client, match

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
    "what app do u use to edit ur videos? they look so clean",
    "send me the link to that song pls",
    "me and my lab partner did a study call on facetime last night",
    "meeting my friends at the park after school",
    "ok that was actually funny chill fr",
    "my dad works nights so its just me and my mom at dinner",
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
    lines = [
        "is anyone else home with u rn",  # alone
        "what school do u go to",  # location / school
        "lets move this to telegram",  # another app
        "we should meet up irl this weekend",  # meeting
        "turn ur cam on for a sec",  # camera
    ]
    for line in lines:  # each in a chat of its own: one clear move, the chat goes on
        stranger, teen = await server.pair(age="teen")
        stranger.send("message", {"content": line})
        await warning(stranger, "high")
        await delivered(stranger, teen, "ok nvm")
        assert [f["data"]["content"] for f in teen.received if f["type"] == "message"] == ["ok nvm"]
        await stranger.close()
        await teen.expect("partner_disconnected")


@pytest_twisted.ensureDeferred
async def test_the_second_move_ends_the_chat(server):
    stranger, teen = await server.pair(age="teen")
    stranger.send("message", {"content": "what school do u go to"})
    await warning(stranger, "high")
    stranger.send("message", {"content": "lets move this to telegram"})
    frame = await warning(stranger, "high")
    assert "ended" in frame["data"]["message"]
    await stranger.expect("partner_disconnected")
    notice = await teen.expect("safety_notice")
    assert notice["data"]["kind"] == "chat_ended"
    await teen.expect("partner_disconnected")
    assert not [f for f in teen.received if f["type"] == "message"]


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


@pytest_twisted.ensureDeferred
async def test_flattery_reaches_the_teen_with_a_notice_and_the_probe_after_it_is_stopped(server):
    stranger, teen = await server.pair(age="teen")
    await delivered(stranger, teen, "haha ur so mature for ur age, not like other ppl here")
    notice = await teen.expect("safety_notice")
    assert notice["data"]["kind"] == "grooming" and notice["data"]["message"]
    stranger.send("message", {"content": "is anyone else home with u rn?"})
    await warning(stranger, "high")
    assert (await teen.expect("safety_notice"))["data"]["kind"] == "chat_ended"
    await teen.expect("partner_disconnected")
    await stranger.expect("partner_disconnected")
    assert not [f for f in teen.received if "home with u" in str(f)]
    # the sender is told nothing of the notices
    assert not [f for f in stranger.received if f["type"] == "safety_notice"]


@pytest_twisted.ensureDeferred
async def test_a_teen_saying_where_they_are_from_and_their_app_passes(server):
    a, b = await server.pair(age="teen")
    for line in ["where are you from? im from canada", "what app do u use to edit videos"]:
        await delivered(a, b, line)
    await delivered(b, a, "capcut mostly, im from brazil btw")
    await a.quiet(0.2)
    assert not [
        f for f in a.received + b.received if f["type"] in ("moderation_warning", "safety_notice")
    ]


async def _client_on(server: ServerHandle, address: str) -> Client:
    c = await Client.connect(server.ws_port, bind=address)
    server.clients.append(c)
    return c


@pytest_twisted.ensureDeferred
async def test_zero_tolerance_from_a_shared_address_bans_the_user_not_the_address(make_server):
    """Five connections from one address make it shared (school NAT): the offender is banned,
    the other users behind the address are not."""
    server = await make_server(shared_key_connections=5)
    others = [await _client_on(server, "127.0.0.7") for _ in range(4)]
    stranger, teen = await _client_on(server, "127.0.0.7"), await _client_on(server, "127.0.0.8")
    await match(stranger, teen, age="teen")
    stranger.send("message", {"content": "send me a pic in ur underwear"})
    await warning(stranger, "high")
    assert await stranger.closed == 1008
    (ban,) = server.hub.screening.autobans
    assert ban.key_shared and not ban.ip_banned and ban.basis == "rule"
    # another teen on the same address still chats
    a, b = others[0], await _client_on(server, "127.0.0.9")
    await match(a, b, age="teen")
    await delivered(a, b, "hi!")
    assert await server.engine.get_ban(None, ("127.0.0.7",)) is None


@pytest_twisted.ensureDeferred
async def test_zero_tolerance_from_an_unshared_address_bans_it_for_a_time(make_server):
    server = await make_server(ip_ban_ttl=600.0)
    stranger, teen = await _client_on(server, "127.0.0.11"), await _client_on(server, "127.0.0.12")
    await match(stranger, teen, age="teen")
    stranger.send("message", {"content": "send me a pic in ur underwear"})
    assert await stranger.closed == 1008
    (ban,) = server.hub.screening.autobans
    assert ban.ip_banned and not ban.key_shared
    assert await server.engine.get_ban(None, ("127.0.0.11",)) is not None
    late = await Client.connect(server.ws_port, bind="127.0.0.11", wait_connected=False)
    server.clients.append(late)
    assert (await late.expect("error"))["data"]["code"] == "BANNED"
    # the operator reads the evidence and lifts the ban
    (listed,) = await console(server, "autobans")
    assert listed["n"] == 0 and listed["ipBanned"] and "underwear" in listed["evidence"]
    assert await console(server, "lift", 0) is True
    await _client_on(server, "127.0.0.11")  # connected again


@pytest_twisted.ensureDeferred
async def test_repeated_rule_blocks_ban_the_user_and_not_the_address(make_server):
    server = await make_server()
    teen, other = await _client_on(server, "127.0.0.21"), await _client_on(server, "127.0.0.22")
    await match(teen, other, age="teen")
    for n in range(5):
        teen.send("message", {"content": f"i will stab you {n} times"})
        await warning(teen, "high")
    assert await teen.closed == 1008
    (ban,) = server.hub.screening.autobans
    assert not ban.ip_banned and ban.reason == "moderation: violent_threat"
    again, b = await _client_on(server, "127.0.0.21"), await _client_on(server, "127.0.0.23")
    await match(again, b, age="teen")
    await delivered(again, b, "hey")


@pytest_twisted.ensureDeferred
async def test_strikes_behind_a_shared_address_are_each_users_own(make_server):
    """Behind a shared address (a school's NAT) one teen's strikes never count against another:
    four blocks of one user, then one block of a classmate, bans nobody."""
    server = await make_server(shared_key_connections=3)
    await _client_on(server, "127.0.0.31")  # a third connection: the address is shared
    a, classmate = await _client_on(server, "127.0.0.31"), await _client_on(server, "127.0.0.31")
    pa, pc = await _client_on(server, "127.0.0.32"), await _client_on(server, "127.0.0.33")
    await match(a, pa, age="teen")
    await match(classmate, pc, age="teen")
    for n in range(4):
        a.send("message", {"content": f"i will stab you {n} times"})
        await warning(a, "high")
    classmate.send("message", {"content": "i will stab you"})
    await warning(classmate, "high")
    await delivered(classmate, pc, "oops sorry")
    await delivered(a, pa, "ok ok")
    assert not server.hub.screening.autobans
