"""Redis over TLS with an ACL user, as managed Redis services require (issue 20, item 3): a real
``redis-server --tls-port`` with a CA the test makes; the instance checks the server's
certificate (its CA, its address), logs in as its ACL user, and its lease thread (a socket of
its own) goes through TLS too.  A wrong CA or password is the reason ``/health`` gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from anygle.console import build_namespace
from anygle.engine.base import EngineConfig
from anygle.engine.redis import RedisEngine
from anygle.tap import StartError
from tests.conftest import Sink
from tests.harness import RedisServer, eventually, free_port, load_selfsigned
from tests.wsclient import match

pytestmark = pytest.mark.slow  # a redis-server of its own, TLS handshakes
ON_REDIS = pytest.mark.parametrize("engine_name", ["redis"], indirect=True)  # for make_server


def write_pki(directory: Path) -> None:
    """A CA of the test's own; a server certificate for 127.0.0.1 (``fullchain.pem``,
    ``privkey.pem``) and a client certificate (``client.pem``, ``client.key``) it signed."""
    selfsigned = load_selfsigned()
    ca = selfsigned.authority()
    files = {"ca.pem": selfsigned.pem(ca[1])}
    for name, key_file, client in (
        ("fullchain.pem", "privkey.pem", False),
        ("client.pem", "client.key", True),
    ):
        key, cert = selfsigned.certificate(ca, ["127.0.0.1"], client=client)
        files[name] = selfsigned.pem(cert) + selfsigned.pem(ca[1])
        files[key_file] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    for name, data in files.items():
        (directory / name).write_bytes(data)


class TlsRedis:
    def __init__(self, directory: Path, auth_clients: str = "no") -> None:
        self.dir = directory
        write_pki(directory)
        self.tls_port = free_port()
        self.server = RedisServer(
            extra=(
                "--tls-port",
                str(self.tls_port),
                "--tls-cert-file",
                str(directory / "fullchain.pem"),
                "--tls-key-file",
                str(directory / "privkey.pem"),
                "--tls-ca-cert-file",
                str(directory / "ca.pem"),
                "--tls-auth-clients",
                auth_clients,
                "--user",
                "anygle",
                "on",
                ">s3cret",
                "~*",
                "&*",
                "+@all",
            )
        ).start()

    def url(self, password: str = "s3cret") -> str:
        return f"rediss://anygle:{password}@127.0.0.1:{self.tls_port}/0"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Any:
    redis = TlsRedis(tmp_path_factory.mktemp("redis-tls"))
    yield redis
    redis.server.close()


@pytest.fixture(scope="module")
def mtls_redis(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A Redis that asks every client for a certificate its CA signed."""
    redis = TlsRedis(tmp_path_factory.mktemp("redis-mtls"), auth_clients="yes")
    yield redis
    redis.server.close()


@ON_REDIS
@pytest_twisted.ensureDeferred
async def test_chat_through_redis_over_tls_as_an_acl_user(make_server, tls_redis):
    ca = str(tls_redis.dir / "ca.pem")
    one = await make_server(engine="redis", redis=tls_redis.url(), redis_tls_ca=ca)
    two = await make_server(engine="redis", redis=tls_redis.url(), redis_tls_ca=ca)
    a, b = await one.client(), await two.client()
    await match(a, b)
    a.send("message", {"content": "over TLS"})  # across instances: through Redis
    assert (await b.expect("message"))["data"]["content"] == "over TLS"
    await eventually(lambda: one.engine.liveness.counters["renewals"] > 2, what="lease renewals")
    assert tls_redis.server.client("ACL", "WHOAMI") == "default"  # the harness; anygle is:
    assert "anygle" in tls_redis.server.client("CLIENT", "LIST")
    stats = build_namespace(one.service)["stats"]()  # the console says which Redis
    if isinstance(stats, Deferred):
        stats = await stats
    assert stats["local"]["redis"] == {"address": f"127.0.0.1:{tls_redis.tls_port}", "tls": True}


@ON_REDIS
@pytest_twisted.ensureDeferred
async def test_a_wrong_ca_name_or_password_stops_start_up_with_one_line(
    make_server, tls_redis, tmp_path
):
    load_selfsigned().write(str(tmp_path), ["127.0.0.1"])  # a CA that did not sign the server
    ca, other_ca = str(tls_redis.dir / "ca.pem"), str(tmp_path / "ca.pem")
    refused = [
        (tls_redis.url(), other_ca, "the server's certificate is refused"),
        (tls_redis.url().replace("127.0.0.1", "localhost"), ca, "the server's certificate is"),
        (tls_redis.url("not-it"), ca, "redis refused to log in: WRONGPASS"),
    ]
    for url, trust, reason in refused:
        with pytest.raises(StartError, match=reason) as e:
            await make_server(engine="redis", redis=url, redis_tls_ca=trust)
        assert "\n" not in str(e.value) and "not-it" not in str(e.value)


@pytest_twisted.ensureDeferred
async def test_a_certificate_refused_while_running_is_the_health_reason(tls_redis, tmp_path):
    """Start-up checked the login; a certificate that changes later is what /health says."""
    load_selfsigned().write(str(tmp_path), ["127.0.0.1"])
    config = EngineConfig(
        instance_id="tls", redis_url=tls_redis.url(), redis_tls=(str(tmp_path / "ca.pem"), "", "")
    )
    engine = RedisEngine(config, reactor)
    await engine.start(Sink())
    try:
        reason = engine.health()[1]
        assert "TLS handshake failed: certificate verify failed" in reason, reason
    finally:
        await engine.stop()


@ON_REDIS
@pytest_twisted.ensureDeferred
async def test_a_client_certificate_when_redis_asks_for_one(make_server, mtls_redis):
    files = {
        "redis_tls_ca": str(mtls_redis.dir / "ca.pem"),
        "redis_tls_cert": str(mtls_redis.dir / "client.pem"),
        "redis_tls_key": str(mtls_redis.dir / "client.key"),
    }
    server = await make_server(engine="redis", redis=mtls_redis.url(), **files)
    a, b = await server.client(), await server.client()
    await match(a, b)
    await eventually(lambda: server.engine.liveness.counters["renewals"] > 2, what="renewals")
    del files["redis_tls_cert"], files["redis_tls_key"]
    with pytest.raises(StartError, match="the server wants a client certificate"):
        await make_server(engine="redis", redis=mtls_redis.url(), **files)
