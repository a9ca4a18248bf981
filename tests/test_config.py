"""Options: precedence, validation, one-line errors, twistd --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anygle.config import OPTIONS, ConfigError, resolve
from anygle.tap import Options

ROOT = Path(__file__).resolve().parent.parent


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no etc/anygle.conf here
    s = resolve({}, env={})
    assert (s.ws, s.http, s.engine) == ("tcp:3001", "tcp:3000", "memory")
    assert s.redis == "redis://127.0.0.1:6379/0"
    assert (s.match_interval, s.interest_timeout, s.rematch_cooldown, s.stats_interval) == (
        100,
        5000,
        60.0,
        5.0,
    )
    assert s.instance_id.endswith(f"-{os.getpid()}")
    assert s.config is None


def test_precedence_cli_env_file_default(tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text("[anygle]\nmatch-interval = 50\ninterest-timeout = 700\nstats-interval = 9\n")
    env = {"ANYGLE_INTEREST_TIMEOUT": "800", "ANYGLE_STATS_INTERVAL": "8"}
    s = resolve({"stats-interval": "7"}, env=env, config_path=str(conf))
    assert s.match_interval == 50  # file
    assert s.interest_timeout == 800  # env beats file
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
        ({"match-interval": "abc"}, "must be an integer"),
        ({"engine": "mongo"}, "must be one of memory, redis"),
        ({"ws": "tcp:notaport"}, "is not a server endpoint"),
        ({"redis": "http://x"}, "must be a redis://"),
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
    assert "\n" not in str(e.value)


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


def test_shipped_config_file_is_valid_and_complete():
    conf = ROOT / "etc" / "anygle.conf"
    s = resolve({}, env={}, config_path=str(conf))
    assert s.engine == "memory"
    text = conf.read_text()
    for option in OPTIONS:  # every option is documented in the shipped file
        assert f"{option.name} =" in text, option.name


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


def test_twistd_help_lists_every_option():
    result = run_twistd("--help")
    assert result.returncode == 0, result.stderr
    for option in OPTIONS:
        assert f"--{option.name}=" in result.stdout, option.name
    assert "--config=" in result.stdout


def test_twistd_bad_value_is_one_line_no_traceback():
    result = run_twistd("--engine", "sqlite")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [
        "anygle: error: --engine: 'sqlite' must be one of memory, redis (from --engine)"
    ]
