"""The harness itself (``tests/harness.py``, also the benchmark's): the nginx it starts runs the
shipped config, and the option lists it passes are options anygle has."""

from __future__ import annotations

import subprocess

import pytest

from anygle.config import Settings
from tests import harness


@pytest.mark.parametrize("balance", [None, "hash $arg_p consistent"])
def test_nginx_runs_the_shipped_config_on_test_ports(tmp_path, balance):
    shipped = harness.SHIPPED_NGINX.read_text()
    text = harness.nginx_config(
        8123, [(5001, 6001), (5002, 6002)], str(tmp_path), balance=balance, backlog=512
    )
    # every location and header of the shipped file is kept, only ports and the balance change
    for line in shipped.splitlines():
        stripped = line.strip()
        if stripped.startswith(("location", "proxy_", "map ", "client_max_body_size")):
            assert line in text, line
    assert "listen 127.0.0.1:8123 backlog=512;" in text and "listen 80" not in text
    assert "4101" not in text and "4201" not in text
    for port in (5001, 5002, 6001, 6002):
        assert f"server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" in text
    ws = text.split("upstream anygle_ws {", 1)[1].split("}", 1)[0]
    if balance is None:
        assert "least_conn;" in ws
    else:
        assert "least_conn" not in ws and f"{balance};" in ws
    argv = harness.write_nginx_config(str(tmp_path), text)
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_option_lists_name_real_options():
    names = harness.option_names()
    assert set(harness.LIMITS_OFF) <= names and set(harness.LIMITS_OUT_OF_REACH) <= names
    # another tree is asked through --help: the same answer for this one
    assert harness.help_options(harness.REPO) - {"config"} == names
    overrides = harness.limits_off_settings()
    settings = Settings(**overrides)
    assert (settings.rate_limit, settings.max_connections_per_ip, settings.message_limits) == (
        0,
        0,
        {},
    )
    assert harness.limits_off_flags() == [f"--{k}={v}" for k, v in harness.LIMITS_OFF.items()]
