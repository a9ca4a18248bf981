"""The harness itself (``tests/harness.py``, also the benchmark's): the nginx it starts runs the
shipped config, and the option lists it passes are options anygle has."""

from __future__ import annotations

import subprocess
import sys

import pytest

from anygle.config import Settings
from tests import harness


@pytest.mark.parametrize("balance", [None, "hash $arg_p consistent"])
def test_nginx_runs_the_shipped_config_on_test_ports(tmp_path, balance):
    shipped = harness.SHIPPED_NGINX.read_text()
    text = harness.nginx_config(
        8123, [(5001, 6001), (5002, 6002)], str(tmp_path), balance=balance, backlog=512
    )
    # the maps, upstream parameters and the site's server block (the HTTPS one, served here
    # over plain HTTP) are kept; the port-80 redirect, ports and the balance change
    site = shipped[shipped.index("server {\n    listen 443") :]
    for line in shipped[: shipped.index("server {")].splitlines() + site.splitlines():
        stripped = line.strip()
        if stripped.startswith(("map ", "include", "add_header", "server_name")):
            assert line in text, line
    assert "listen 127.0.0.1:8123 backlog=512;" in text and "listen 80" not in text
    assert "return 301" not in text and "ssl_" not in text
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
    # the locations come from the shipped include file, as in /etc/nginx/conf.d/
    included = (tmp_path / "conf.d" / "anygle-locations.inc").read_text()
    assert included == (harness.SHIPPED_NGINX.parent / "anygle-locations.inc").read_text()


def test_nginx_runs_the_shipped_tls_block(tmp_path):
    """With certificate files, the shipped HTTPS server block itself, its paths replaced."""
    tls = tmp_path / "tls"
    subprocess.run(
        [sys.executable, str(harness.ROOT / "deploy" / "compose" / "selfsigned.py"), str(tls)],
        check=True,
        capture_output=True,
    )
    cert, key = str(tls / "fullchain.pem"), str(tls / "privkey.pem")
    text = harness.nginx_config(8124, [(5001, 6001)], str(tmp_path), tls=(cert, key))
    assert "listen 127.0.0.1:8124 ssl;" in text
    assert f"ssl_certificate {cert};" in text and f"ssl_certificate_key {key};" in text
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in text
    argv = harness.write_nginx_config(str(tmp_path), text)
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


@pytest.mark.slow
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
