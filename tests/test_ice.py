"""ICE servers and ephemeral TURN credentials (coturn's REST API scheme), checked against a real
coturn started on loopback: what anygle hands out allocates, a tampered or expired one does not."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from anygle.clientip import ClientAddress
from anygle.config import resolve
from anygle.engine.base import EngineConfig
from anygle.engine.memory import MemoryEngine
from anygle.hub import Hub
from anygle.ice import IceServers, turn_credential, turn_username
from anygle.model import Preferences
from anygle.wire import Broadcast
from tests import turnclient
from tests.harness import free_port

SECRET = "anygle-test-secret"
REALM = "anygle.test"
USER = "6f1c0e9e-3b0e-4a51-9a8e-0c3c1c2b9d11"
TYPES = ("connected", "matched")


# --- credentials ------------------------------------------------------------------------------
def test_credential_known_answer():
    # printf '%s' "$USERNAME" | openssl dgst -sha1 -hmac north -binary | base64
    assert turn_username(USER, 1795000000) == f"1795000000:{USER}"
    assert turn_credential("north", f"1795000000:{USER}") == "ofcfAHyCXXlfTCnia856/vnKIEk="
    assert turn_credential("north", f"1795003600:{USER}") == "vQeEM2ojHOWHeVLL1/+nqRvtWgU="


def test_ice_servers_for_a_user():
    ice = IceServers(
        stun_urls=("stun:a.example:3478", "stun:b.example"),
        turn_urls=("turn:t.example:3478?transport=udp", "turns:t.example:5349"),
        turn_secret="north",
        turn_ttl=3600,
    )
    assert ice.for_user(USER, 1794999999.9) == [
        {"urls": ["stun:a.example:3478", "stun:b.example"]},
        {
            "urls": ["turn:t.example:3478?transport=udp", "turns:t.example:5349"],
            "username": f"1795003599:{USER}",
            "credential": turn_credential("north", f"1795003599:{USER}"),
        },
    ]
    assert IceServers(stun_urls=("stun:a.example",)).for_user(USER, 0) == [
        {"urls": ["stun:a.example"]}
    ]
    assert not IceServers() and "north" not in repr(ice)
    with pytest.raises(ValueError, match="need a secret"):
        IceServers(turn_urls=("turn:t.example",))


# --- options (bad values: tests/test_config.py) ---------------------------------------------------
def test_ice_options_from_config_file_and_env(tmp_path, monkeypatch):
    conf = tmp_path / "anygle.conf"
    conf.write_text(
        "[anygle]\n"
        "stun-urls = stun:stun.example.org:3478, stun:[2001:db8::1]\n"
        "turn-urls = turn:turn.example.org:3478?transport=udp,turns:turn.example.org:5349\n"
        "turn-ttl = 600\n"
    )
    s = resolve({}, env={"ANYGLE_TURN_SECRET": "s3cr%t"}, config_path=str(conf))
    assert s.stun_urls == ("stun:stun.example.org:3478", "stun:[2001:db8::1]")
    assert s.turn_urls == (
        "turn:turn.example.org:3478?transport=udp",
        "turns:turn.example.org:5349",
    )
    assert (s.turn_secret, s.turn_ttl) == ("s3cr%t", 600)
    assert "s3cr%t" not in repr(s)
    monkeypatch.chdir(tmp_path)  # no etc/anygle.conf here
    defaults = resolve({}, env={}, config_path=None)
    assert (defaults.stun_urls, defaults.turn_urls, defaults.turn_ttl) == ((), (), 3600)


# --- the hub, on a fake clock -------------------------------------------------------------------
class Recorder:
    """The hub's Client interface, keeping what it is sent."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def broadcast(self, message: Broadcast) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


def done(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "did not complete synchronously"
    return results[0]


def test_credentials_come_from_the_reactor_clock_and_are_fresh_at_each_match():
    clock = Clock()
    clock.advance(1_800_000_000)
    engine = MemoryEngine(EngineConfig(instance_id="t"), clock)
    ice = IceServers(turn_urls=("turn:t.example",), turn_secret="north", turn_ttl=600)
    hub = Hub(engine, clock, ice=ice)
    done(engine.start(hub))
    a, b, c = Recorder(), Recorder(), Recorder()
    sa = done(Deferred.fromCoroutine(hub.open(a, ClientAddress.of("192.0.2.1"))))
    sb = done(Deferred.fromCoroutine(hub.open(b, ClientAddress.of("192.0.2.2"))))

    def turn(frame: dict[str, Any]) -> dict[str, Any]:
        (server,) = frame["data"]["iceServers"]
        assert server["credential"] == turn_credential("north", server["username"])
        return server

    assert turn(a.frames[0])["username"] == f"1800000600:{sa.user_id}"
    prefs = Preferences("adult", "text", "moderated", (), False)
    clock.advance(100)
    done(hub.join(sa, prefs))
    clock.advance(0.5)
    done(hub.join(sb, prefs))
    assert turn(a.frames[-1])["username"] == f"1800000700:{sa.user_id}"
    assert turn(b.frames[-1])["username"] == f"1800000700:{sb.user_id}"
    sc = done(Deferred.fromCoroutine(hub.open(c, ClientAddress.of("192.0.2.3"))))
    clock.advance(50)
    done(hub.skip(sa))  # a searches again; c takes it: a new match, new credentials for a
    done(hub.join(sc, prefs))
    assert [f["type"] for f in a.frames] == [
        "connected",
        "searching",
        "matched",
        "searching",
        "matched",
    ]
    assert turn(a.frames[-1])["username"] == f"1800000750:{sa.user_id}"


# --- a real coturn ------------------------------------------------------------------------------
class Coturn:
    """``turnserver`` on loopback with the REST API secret; log and pid file in a temp dir."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / "turnserver.log"
        low = 50000 + self.port * 7 % 10000  # relay ports: 200 of them, not the listening one
        if low <= self.port <= low + 200:
            low += 300
        self.args = [
            shutil.which("turnserver") or "/usr/bin/turnserver",
            "-n",  # no config file
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}",
            f"--min-port={low}",
            f"--max-port={low + 200}",
            "--use-auth-secret",
            f"--static-auth-secret={SECRET}",
            f"--realm={REALM}",
            "--allow-loopback-peers",
            f"--userdb={workdir / 'turndb'}",
            f"--pidfile={workdir / 'turnserver.pid'}",
            f"--log-file={self.log_path}",
            "--simple-log",
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Coturn:
        self.proc = subprocess.Popen(
            self.args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            turnclient.wait_listening("127.0.0.1", self.port, timeout=20)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"turnserver did not come up: {self.log()[-2000:]}") from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def allocate(self, username: str, credential: str) -> turnclient.Response:
        response, key = turnclient.allocate("127.0.0.1", self.port, username, credential)
        if response.error is None:
            assert response.integrity_ok(key), "coturn signed with another key"
        return response


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory):
    if not Path("/usr/bin/turnserver").exists() and shutil.which("turnserver") is None:
        pytest.fail("turnserver not installed (Debian package coturn; .ci/install installs it)")
    server = Coturn(tmp_path_factory.mktemp("coturn")).start()
    yield server
    server.stop()


def ice_settings(coturn: Coturn, ttl: int = 600) -> dict[str, Any]:
    return {
        "stun_urls": (f"stun:127.0.0.1:{coturn.port}",),
        "turn_urls": (f"turn:127.0.0.1:{coturn.port}?transport=udp",),
        "turn_secret": SECRET,
        "turn_ttl": ttl,
    }


def turn_entry(frame: dict[str, Any], coturn: Coturn, user_id: str) -> dict[str, Any]:
    """The TURN entry of a frame's iceServers, checked: this user's, valid ``ttl`` s from now."""
    stun, turn = frame["data"]["iceServers"]
    assert stun == {"urls": [f"stun:127.0.0.1:{coturn.port}"]}
    assert turn["urls"] == [f"turn:127.0.0.1:{coturn.port}?transport=udp"]
    expiry, user = turn["username"].split(":", 1)
    assert user == user_id
    assert abs(int(expiry) - (time.time() + 600)) < 5
    return turn


def assert_allocates(coturn: Coturn, turn: dict[str, Any]) -> None:
    response = coturn.allocate(turn["username"], turn["credential"])
    assert response.error is None, f"{response.error}; coturn log: {coturn.log()[-1500:]}"
    assert response.kind == turnclient.ALLOCATE | turnclient.SUCCESS
    assert response.relayed()[0] == "127.0.0.1"


# The frames are built by the hub for every engine: one engine shows the seed contract is kept.
@pytest.mark.parametrize("engine_name", ["memory"])
@pytest_twisted.ensureDeferred
async def test_no_ice_servers_unless_configured(server):
    a, b = await server.pair()
    for c in (a, b):
        connected, matched = (next(f for f in c.received if f["type"] == t) for t in TYPES)
        assert set(connected["data"]) == {"userId", "resumeToken"}  # resumeToken: ours
        assert set(matched["data"]) == {
            "roomId",
            "partnerId",
            "mode",
            "isInitiator",
            "partnerInfo",
        }


@pytest_twisted.ensureDeferred
async def test_issued_credentials_allocate_on_coturn_tampered_and_expired_do_not(
    make_server, coturn
):
    server = await make_server(**ice_settings(coturn))
    a, b = await server.pair()
    for c in (a, b):
        connected, matched = (next(f for f in c.received if f["type"] == t) for t in TYPES)
        assert_allocates(coturn, turn_entry(connected, coturn, c.user_id))
        assert_allocates(coturn, turn_entry(matched, coturn, c.user_id))

    turn = turn_entry(next(f for f in a.received if f["type"] == "matched"), coturn, a.user_id)
    expiry, _ = turn["username"].split(":", 1)
    credential = turn["credential"]
    tampered = credential[:5] + ("A" if credential[5] != "A" else "B") + credential[6:]
    refused = {
        "tampered credential": (turn["username"], tampered),
        "another user's name": (f"{expiry}:{b.user_id}", credential),
        "later expiry": (f"{int(expiry) + 3600}:{a.user_id}", credential),
    }
    past = f"{int(time.time()) - 60}:{a.user_id}"  # correctly signed, but expired
    refused["expired"] = (past, turn_credential(SECRET, past))
    for what, (username, password) in refused.items():
        assert coturn.allocate(username, password).error == 401, what


@pytest.mark.parametrize("engine_name", ["redis"])
@pytest_twisted.ensureDeferred
async def test_cross_instance_match_carries_each_users_own_credentials(make_server, coturn):
    one = await make_server(**ice_settings(coturn))
    two = await make_server(**ice_settings(coturn))
    a, b = await one.client(), await two.client()
    a.join()
    await a.expect("searching")
    b.join()
    ma, mb = await a.expect("matched"), await b.expect("matched")
    assert ma["data"]["partnerId"] == b.user_id and mb["data"]["partnerId"] == a.user_id
    assert_allocates(coturn, turn_entry(ma, coturn, a.user_id))
    assert_allocates(coturn, turn_entry(mb, coturn, b.user_id))
