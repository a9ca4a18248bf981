"""Options: precedence, validation, one-line errors, twistd --help."""

from __future__ import annotations

import configparser
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import ClientFactory, Protocol

import anygle
from anygle.config import OPTIONS, ConfigError, Settings, resolve
from anygle.redisurl import redacted
from anygle.tap import AnygleService, ListenError, Options
from tests.conftest import settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no etc/anygle.conf here
    s = resolve({}, env={})
    assert (s.ws, s.http, s.engine) == ("tcp:3001", "tcp:3000", "memory")
    assert s.redis == "redis://127.0.0.1:6379/0"
    assert (s.match_interval, s.interest_timeout, s.rematch_cooldown, s.stats_interval) == (
        0.1,
        5.0,
        60.0,
        5.0,
    )
    assert s.instance_id.endswith(f"-{os.getpid()}")
    assert s.config is None


def test_precedence_cli_env_file_default(tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text("[anygle]\nmatch-interval = 50ms\ninterest-timeout = 7\nstats-interval = 9\n")
    env = {"ANYGLE_INTEREST_TIMEOUT": "0.8", "ANYGLE_STATS_INTERVAL": "8"}
    s = resolve({"stats-interval": "7"}, env=env, config_path=str(conf))
    assert s.match_interval == pytest.approx(0.05)  # file
    assert s.interest_timeout == 0.8  # env beats file
    assert s.stats_interval == 7.0  # command line beats env
    assert s.rematch_cooldown == 60.0  # default
    assert s.config == str(conf)


def test_env_can_name_the_config_file(tmp_path):
    conf = tmp_path / "b.conf"
    conf.write_text("[anygle]\nengine = redis\n")
    assert resolve({}, env={"ANYGLE_CONFIG": str(conf)}).engine == "redis"


@pytest.mark.parametrize(
    ("cli", "message"),
    [
        ({"match-interval": "0"}, "--match-interval: '0' must be > 0"),
        ({"match-interval": "abc"}, "must be a number"),
        # the milliseconds this option once took are caught, not taken as 100 s
        ({"match-interval": "100"}, r"must be <= 10 \(seconds; write 250ms"),
        ({"interest-timeout": "5000"}, "must be <= 600"),
        ({"engine": "mongo"}, "must be one of memory, redis"),
        ({"ws": "tcp:notaport"}, "is not a server endpoint"),
        ({"redis": "http://x"}, "must be a redis://"),
        ({"redis": "redis://h:notaport/0"}, "has port 'notaport', not a number from 1 to 65535"),
        ({"redis": "redis://h:99999"}, "has port '99999', not a number from 1 to 65535"),
        ({"redis": "redis://h:0"}, "has port '0'"),
        (
            {"redis": "redis://:s3cret@h:6379/abc"},
            r"'redis://:\*\*\*@h:6379/abc' has database 'abc'",
        ),
        ({"redis": "unix://?db=1"}, "has no socket path"),
        ({"redis-tls-ca": "/etc/ssl/ca.pem"}, "--redis-tls-\\* need a rediss:// URL"),
        (
            {"redis": "rediss://h", "redis-tls-cert": "/c.pem"},
            "--redis-tls-cert and --redis-tls-key go",
        ),
        (
            {"engine": "redis", "redis": "rediss://h", "redis-tls-ca": "/nonexistent.pem"},
            "--redis-tls-ca /nonexistent.pem: no such file or directory",
        ),
        ({"engine": "redis", "redis": "rediss://h", "redis-tls-ca": "/etc/hostname"}, "no PEM"),
        ({"redis": "unix:///run/redis.sock?db=x"}, "has database 'x'"),
        ({"rematch-cooldown": "-1"}, "must be >= 0"),
        ({"stun-urls": "http://stun.example"}, "--stun-urls: .* must be stun: URLs like"),
        ({"stun-urls": "stun:a.example,turn:t.example"}, "'turn:t.example' is not"),
        ({"stun-urls": "stun:"}, "must be stun: URLs"),
        ({"stun-urls": "stun:s.example?transport=udp"}, "must be stun: URLs"),
        ({"turn-urls": "stun:s.example", "turn-secret": "x"}, "--turn-urls: .* must be turn:"),
        ({"turn-urls": "turn:t.example:70000", "turn-secret": "x"}, "ports 1-65535"),
        ({"turn-urls": "turn:t.example?transport=sctp", "turn-secret": "x"}, "must be turn:"),
        ({"turn-urls": "turn:t.example"}, "--turn-urls needs --turn-secret"),
        ({"turn-secret": "x"}, "--turn-urls is empty"),
        ({"turn-ttl": "0"}, "--turn-ttl: '0' must be > 0"),
    ],
)
def test_bad_values_name_option_and_source(cli, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message) as e:
        resolve(cli, env={})
    assert "\n" not in str(e.value) and "s3cret" not in str(e.value)


def test_bad_config_files(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[anygle]\nmatch-intervall = 5\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        resolve({}, env={}, config_path=str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        resolve({}, env={}, config_path=str(tmp_path / "missing.conf"))
    env_bad = {"ANYGLE_PING_TIMEOUT": "0"}
    with pytest.raises(ConfigError, match=r"from ANYGLE_PING_TIMEOUT"):
        resolve({}, env=env_bad, config_path=None)


def test_misspelled_names_are_refused_with_the_nearest_valid_one(tmp_path):
    """A misspelled key, section or variable would leave its setting at the default unnoticed."""
    key = tmp_path / "key.conf"
    key.write_text("[anygle]\nmatch-intervall = 5\n")
    with pytest.raises(ConfigError, match=r"match-intervall \(did you mean match-interval\?\)"):
        resolve({}, env={}, config_path=str(key))
    section = tmp_path / "section.conf"
    section.write_text("[anygel]\nengine = redis\n")
    with pytest.raises(ConfigError, match=r"section\(s\) \[anygel\] \(did you mean \[anygle\]\?\)"):
        resolve({}, env={}, config_path=str(section))
    with pytest.raises(ConfigError, match=r"ANYGLE_ENGIN \(did you mean ANYGLE_ENGINE\?\)"):
        resolve({}, env={"ANYGLE_ENGIN": "redis"}, config_path=None)
    with pytest.raises(ConfigError, match=r"variable\(s\) ANYGLE_XYZZY$"):
        resolve({}, env={"ANYGLE_XYZZY": "1"}, config_path=None)
    # what is not an option but ours is fine: the config path, the scanner's cache, the tests'
    ours = {"ANYGLE_HS_CACHE": str(tmp_path), "ANYGLE_TEST_NETNS": "1", "ANYGLE_ENGINE": "redis"}
    assert resolve({}, env=ours, config_path=None).engine == "redis"


def test_every_default_parses_and_settings_take_them_from_the_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    resolved = resolve({"instance-id": "x"}, env={})
    built = Settings(instance_id="x")
    assert resolved == built


def test_shipped_config_file_lists_every_option_with_its_default():
    conf = ROOT / "etc" / "anygle.conf"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(conf)
    assert dict(parser.items("anygle")) == {o.name: o.default for o in OPTIONS}
    assert resolve({}, env={}, config_path=str(conf)).engine == "memory"


def test_readme_table_shows_every_option_with_its_default():
    rows = re.findall(
        r"^\| `--([a-z0-9-]+)[^`]*` \| ([^|]+) \|", (ROOT / "README.md").read_text(), re.M
    )
    table = {name: shown.strip().strip("`") for name, shown in rows}
    table.pop("config")
    assert table == {o.name: o.shown_default for o in OPTIONS}


def test_no_default_depends_on_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "anygle.conf").write_text("[anygle]\nengine = redis\n")
    monkeypatch.chdir(tmp_path)
    s = resolve({}, env={})
    assert s.engine == "memory" and s.config is None  # ./etc/anygle.conf is not picked up
    for option in OPTIONS:
        if option.path and option.default:
            assert os.path.isabs(option.default), option.name


def test_relative_paths_in_a_config_file_are_taken_from_its_directory(tmp_path, monkeypatch):
    conf = tmp_path / "conf" / "anygle.conf"
    conf.parent.mkdir()
    conf.write_text("[anygle]\nmanhole-keys = keys\nmanhole-host-key = /abs/host_key\n")
    monkeypatch.chdir(tmp_path)
    s = resolve({}, env={}, config_path=str(conf))
    assert s.manhole_keys == str(conf.parent / "keys")
    assert s.manhole_host_key == "/abs/host_key"
    # on the command line, a relative path is the shell's: relative to where it was typed
    assert resolve({"manhole-keys": "k"}, env={}, config_path=str(conf)).manhole_keys == "k"


def test_options_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        Options().parseOptions(["--stats-interval", "never"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("anygle: error: --stats-interval")


def run_twistd(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    twistd = Path(sys.executable).with_name("twistd")
    return subprocess.run(
        [str(twistd), "-n", "--pidfile=", "anygle", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_twistd_help_lists_every_option_with_its_real_default():
    result = run_twistd("--help")
    assert result.returncode == 0, result.stderr
    text = "".join(result.stdout.split())  # usage.Options wraps the help text anywhere
    for option in OPTIONS:
        assert f"--{option.name}=" in text, option.name
        assert "".join(f"[default: {option.shown_default}]".split()) in text, option.name
    assert "--config=" in text
    assert "auto]" not in text


@pytest.mark.slow
def test_twistd_bad_value_is_one_line_no_traceback():
    result = run_twistd("--engine", "sqlite")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [
        "anygle: error: --engine: 'sqlite' must be one of memory, redis (from --engine)"
    ]


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _refused(port: int) -> bool:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    try:
        proto = await endpoint.connect(ClientFactory.forProtocol(Protocol))
    except ConnectionRefusedError:
        return True
    assert isinstance(proto, Protocol) and proto.transport is not None  # connected
    proto.transport.loseConnection()
    return False


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_port_that_cannot_be_bound_leaves_no_listener_open():
    taken, ws_port = _taken_port(), _free_port()
    http = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
    service = AnygleService(settings(ws=f"tcp:{ws_port}:interface=127.0.0.1", http=http), reactor)
    try:
        with pytest.raises(ListenError) as e:
            service.startService()
        assert str(e.value) == f"--http {http}: cannot listen: Address already in use"
        assert not service.running and service.ws.port is None
        for _ in range(100):  # the WebSocket port, opened first, is closed again
            if await _refused(ws_port):
                break
        else:
            pytest.fail(f"port {ws_port} still listening")
    finally:
        taken.close()


@pytest.mark.slow
@pytest.mark.parametrize("option", ["http", "ws"])
def test_twistd_with_a_port_taken_says_one_line_and_exits_2(option):
    """The line names the endpoint as the operator wrote it (not with the WebSocket
    listener's ``backlog=`` added)."""
    taken = _taken_port()
    other = "ws" if option == "http" else "http"
    try:
        port = taken.getsockname()[1]
        result = run_twistd(f"--{option}", f"tcp:{port}:interface=127.0.0.1", f"--{other}", "tcp:0")
    finally:
        taken.close()
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"anygle: error: --{option} tcp:{port}:interface=127.0.0.1: cannot listen: "
        "Address already in use"
    ]
    assert "Traceback" not in result.stdout


@pytest.mark.slow
def test_twistd_anygle_version_is_anygles():
    result = run_twistd("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"anygle {anygle.__version__} (Twisted "), result.stdout


@pytest.mark.slow
def test_editable_install_gives_a_working_twistd_anygle(tmp_path):
    """`pip install -e .` into a fresh venv, then `twistd -n anygle --help` from elsewhere."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "-e",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr[-2000:]
    result = subprocess.run(
        [str(venv / "bin" / "twistd"), "-n", "anygle", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "anygle [options]" in result.stdout and "--match-interval=" in result.stdout
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import anygle; print(anygle.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(ROOT / "anygle" / "__init__.py")  # the work tree, live


def test_logged_redis_urls_hide_the_password():
    assert redacted("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redacted("redis://app:s3cret@10.0.0.5:6380/2") == "redis://app:***@10.0.0.5:6380/2"
    assert redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


@pytest.mark.slow
def test_twistd_with_a_refused_redis_password_says_one_line_and_exits_2(redis):
    url = redis.url.replace("redis://", "redis://:wrong-password@")
    result = run_twistd("--engine", "redis", "--redis", url, "--ws", "tcp:0", "--http", "tcp:0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"anygle: error: --redis redis://:***@127.0.0.1:{redis.port}/0: ")
    assert "redis refused to log in: ERR AUTH" in line and "wrong-password" not in line
