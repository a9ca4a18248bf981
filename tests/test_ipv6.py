"""Abuse keys: IPv6 clients count by network prefix for every per-address rule (issue 13).

The unit tests check the key function, the ban names, the console's ban targets and the capped
key table (with a Clock).  ``test_ipv6_rules_on_real_sockets_in_a_network_namespace`` runs
``tests/netns_ipv6.py`` in a network namespace of its own, where clients connect from real IPv6
source addresses of one /64, a neighbouring /64 and elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

from anygle.clientip import (
    ClientAddress,
    ClientAddressResolver,
    abuse_key,
    ban_keys,
    ban_target,
    parse_networks,
)
from anygle.config import ConfigError, resolve
from anygle.engine.base import EngineConfig
from anygle.engine.memory import MemoryEngine
from anygle.limits import KEY_WINDOW, AbuseKeyTable

ROOT = Path(__file__).resolve().parent.parent
NETNS_TESTS = 9  # tests in tests/netns_ipv6.py, engines counted


@pytest.mark.parametrize(
    ("address", "prefix", "key"),
    [
        ("203.0.113.7", 64, "203.0.113.7"),
        ("::ffff:203.0.113.7", 64, "203.0.113.7"),  # IPv4-mapped: the IPv4 address
        ("2001:db8:1:2::a", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", 64, "2001:db8:1:2::/64"),
        ("2001:0DB8:0001:0002:0000:0000:0000:000A", 64, "2001:db8:1:2::/64"),
        (" 2001:db8:1:2::a ", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2::a", 56, "2001:db8:1::/56"),
        ("2001:db8:1:2::a", 48, "2001:db8:1::/48"),
        ("2001:db8:1:2::a", 128, "2001:db8:1:2::a"),  # 128: every address by itself
        ("fe80::1%eth0", 64, "fe80::/64"),  # the zone id is no part of the key
        ("::1", 64, "::/64"),
    ],
)
def test_abuse_key(address, prefix, key):
    assert abuse_key(address, prefix) == key


@pytest.mark.parametrize(
    ("address", "prefix"),
    [
        ("", 64),
        ("unix", 64),
        ("203.0.113.300", 64),
        ("2001:db8::/64", 64),  # a network is not an address
        ("203.0.113.7:443", 64),  # ports are the resolver's business
        ("[2001:db8::1]", 64),
        ("2001:db8::1", 0),
        ("2001:db8::1", 15),
        ("2001:db8::1", 129),
    ],
)
def test_abuse_key_refuses_bad_input(address, prefix):
    with pytest.raises(ValueError):
        abuse_key(address, prefix)


def test_ban_names_are_the_address_first_then_its_networks():
    assert ban_keys("203.0.113.7") == ("203.0.113.7",)
    assert ban_keys("::ffff:203.0.113.7") == ("203.0.113.7",)
    a = "2001:db8:1:2::a"
    assert ban_keys(a) == (a, "2001:db8:1:2::/64", "2001:db8:1::/56", "2001:db8:1::/48")
    assert ban_keys(a, 128) == (a, "2001:db8:1::/56", "2001:db8:1::/48")
    assert ban_keys(a, 56) == (a, "2001:db8:1::/56", "2001:db8:1::/48")
    assert ban_keys(a, 40) == (a, "2001:db8::/40")


@pytest.mark.parametrize(
    ("text", "prefix", "target"),
    [
        ("203.0.113.9", 64, "203.0.113.9"),
        ("203.0.113.9/32", 64, "203.0.113.9"),
        ("::ffff:203.0.113.9", 64, "203.0.113.9"),
        ("2001:db8:1:2::a", 64, "2001:db8:1:2::/64"),  # an address: its key
        ("2001:db8:1:2::a/64", 64, "2001:db8:1:2::/64"),  # host bits cleared
        ("2001:db8:1:2::a/128", 64, "2001:db8:1:2::a"),  # one address, as redis-cli would
        ("2001:db8:1:2::/56", 64, "2001:db8:1::/56"),
        ("2001:db8:1::/48", 64, "2001:db8:1::/48"),
        ("2001:db8:1:2::a", 56, "2001:db8:1::/56"),
        ("2001:db8:1:2::a", 128, "2001:db8:1:2::a"),
    ],
)
def test_console_ban_target(text, prefix, target):
    assert ban_target(text, prefix) == target
    assert target in ban_keys(text.split("/")[0], prefix)  # admission looks it up


@pytest.mark.parametrize(
    ("text", "prefix"),
    [
        ("2001:db8::/80", 64),  # narrower than the key: would never match
        ("2001:db8::/32", 64),  # wider than a /48: not looked up
        ("2001:db8::/56", 48),  # narrower than the key
        ("203.0.113.0/24", 64),
        ("banned", 64),
    ],
)
def test_console_ban_target_refuses_what_would_never_match(text, prefix):
    with pytest.raises(ValueError):
        ban_target(text, prefix)


def test_resolver_gives_the_same_key_directly_and_through_a_trusted_proxy():
    resolver = ClientAddressResolver(parse_networks("127.0.0.1/32, 2001:db8:ffff::2/128"), 56)
    direct = resolver.client("2001:db8:1:2::a")
    assert direct == ClientAddress(
        "2001:db8:1:2::a",
        "2001:db8:1::/56",
        ("2001:db8:1:2::a", "2001:db8:1::/56", "2001:db8:1::/48"),
    )
    for peer in ("127.0.0.1", "::ffff:127.0.0.1", "2001:db8:ffff::2"):
        via = resolver.client(peer, ["6.6.6.6, 2001:db8:1:2:ff::1"])
        assert via.abuse_key == direct.abuse_key and via.ip == "2001:db8:1:2:ff::1"
    assert resolver.client("127.0.0.1", ["[2001:db8:1:3::1]:443"]).abuse_key == "2001:db8:1::/56"
    # untrusted peer: its own key, whatever it claims
    assert resolver.client("2001:db8:9::1", ["2001:db8:1:2::a"]).abuse_key == "2001:db8:9::/56"
    unix = resolver.client("unix")
    assert (unix.ip, unix.abuse_key, unix.ban_keys) == ("unix", "unix", ("unix",))


def test_ipv6_prefix_and_key_cap_options(tmp_path):
    s = resolve({}, env={})
    assert (s.ipv6_prefix, s.max_abuse_keys) == (64, 100_000)
    conf = tmp_path / "anygle.conf"
    conf.write_text("[anygle]\nipv6-prefix = 56\nmax-abuse-keys = 5000\n")
    s = resolve({}, env={}, config_path=str(conf))
    assert (s.ipv6_prefix, s.max_abuse_keys) == (56, 5000)
    assert resolve({"ipv6-prefix": "48"}, env={}, config_path=str(conf)).ipv6_prefix == 48
    for bad in ("8", "129", "sixty-four", "-1"):
        with pytest.raises(ConfigError, match="--ipv6-prefix"):
            resolve({"ipv6-prefix": bad}, env={})


@implementer(ILogObserver)
class Logged:
    """Log events of ``anygle.limits`` while in use."""

    def __enter__(self) -> list[str]:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        return self.lines

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_namespace") == "anygle.limits":
            self.lines.append(event["log_format"].format(**event))

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)


def test_key_table_refuses_new_keys_when_full_and_logs_once_per_episode():
    clock = Clock()
    table = AbuseKeyTable(3, clock)
    with Logged() as log:
        assert all(table.admit(k) for k in ("a", "b", "c"))
        assert not table.admit("d") and not table.admit("e")  # full: new keys refused
        assert table.admit("a")  # a known key goes on
        assert len(log) == 1 and "refusing" in log[0] and "3" in log[0]
        clock.advance(KEY_WINDOW - 1)
        assert table.admit("b")  # b stays another window
        clock.advance(1.5)  # a and c expired, not yet swept: the next new key sweeps them
        assert table.admit("d") and table.admit("e")
        assert sorted(table._until) == ["b", "d", "e"]
        assert len(log) == 2 and "again (2 refused)" in log[1]
        assert not table.admit("f")  # a new episode: logged again
        assert len(log) == 3
    assert table.summary() == {"tracked": 3, "cap": 3, "refused": 3}


def test_key_table_keeps_connected_and_struck_keys():
    clock = Clock()
    table = AbuseKeyTable(2, clock)
    assert table.admit("conn")
    table.connected("conn")
    table.connected("conn")
    table.hold("conn", 3600.0)  # strikes while connected
    assert table.admit("struck")
    table.hold("struck", 300.0)
    clock.advance(200.0)
    assert not table.admit("new")  # both still there
    table.disconnected("conn")
    clock.advance(200.0)  # struck expired; conn still has one connection
    assert table.admit("new") and "conn" in table and "struck" not in table
    table.disconnected("conn")  # closed: its strikes keep it until 3600 s after the hold
    clock.advance(3000.0)
    table._sweep(clock.seconds())
    assert list(table._until) == ["conn"]
    clock.advance(300.0)
    table._sweep(clock.seconds())
    assert len(table) == 0
    table.disconnected("never connected")  # harmless


def test_key_table_cap_zero_keeps_nothing():
    table = AbuseKeyTable(0, Clock())
    assert all(table.admit(str(i)) for i in range(1000))
    table.connected("a")
    table.hold("a", 60.0)
    table.disconnected("a")
    assert len(table) == 0


@pytest.mark.slow
def test_a_client_cycling_networks_cannot_grow_the_per_key_state():
    """A fresh /64 every 40 ms for 20 minutes, each doing a handshake (rate state), every 10th
    collecting a strike: the table stays at its cap, the memory engine's per-key maps at most
    twice that (an entry may outlive its table entry until the engine's next purge)."""
    clock = Clock()
    clock.advance(1000.0)
    cap = 500
    table = AbuseKeyTable(cap, clock)
    engine = MemoryEngine(EngineConfig(instance_id="t"), clock)
    admitted = most_rates = 0
    for i in range(30_000):
        key = abuse_key(f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1")
        if table.admit(key):
            admitted += 1
            engine.rate(f"ws:{key}", 100, 60.0)
            if admitted % 10 == 0:
                table.hold(key, 3600.0)
                engine.incr(f"strikes:warn:ip:{key}", 3600.0)
        clock.advance(0.04)
        if i % 25 == 0:
            engine.tick(clock.seconds())
        assert len(table) <= cap
        most_rates = max(most_rates, len(engine.rates))
    assert admitted > 4 * cap  # keys without strikes expire and make room
    assert most_rates <= 2 * cap and len(engine.counters) <= cap


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("ANYGLE_TEST_NETNS") == "1",
    reason="already inside the namespace this test makes",
)
def test_ipv6_rules_on_real_sockets_in_a_network_namespace():
    """tests/netns_ipv6.py in a network namespace of its own (``unshare -n``), both engines."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed (util-linux / iproute2): no network namespace")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(
            "cannot create a network namespace (`unshare -n` needs root or CAP_SYS_ADMIN): "
            + probe.stderr.strip()
        )
    env = dict(os.environ, ANYGLE_TEST_NETNS="1", PYTHONPATH=str(ROOT))
    run = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "pytest", "-q", "tests/netns_ipv6.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-8000:]
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) == NETNS_TESTS, out[-3000:]
    assert not re.search(r"\d+ (skipped|failed|errors?)\b", out), out[-3000:]
