"""Redis over TLS with an ACL user, as managed Redis services require (issue 20, item 3): a real
``redis-server --tls-port`` with a CA the test makes; the instance checks the server's
certificate (its CA, its address), logs in as its ACL user, and its lease thread (a socket of
its own) goes through TLS too.  A wrong CA or password is the reason ``/health`` gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from anygle.engine.base import EngineConfig
from anygle.engine.redis import RedisEngine
from anygle.tap import StartError
from tests.conftest import Sink
from tests.harness import RedisServer, eventually, free_port, load_selfsigned

pytestmark = pytest.mark.slow  # a redis-server of its own, TLS handshakes
ON_REDIS = pytest.mark.parametrize("engine_name", ["redis"], indirect=True)  # for make_server


class TlsRedis:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        load_selfsigned().write(str(directory), ["127.0.0.1"])
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
                "no",
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


@ON_REDIS
@pytest_twisted.ensureDeferred
async def test_chat_through_redis_over_tls_as_an_acl_user(make_server, tls_redis):
    ca = str(tls_redis.dir / "ca.pem")
    one = await make_server(engine="redis", redis=tls_redis.url(), redis_tls_ca=ca)
    two = await make_server(engine="redis", redis=tls_redis.url(), redis_tls_ca=ca)
    a, b = await one.client(), await two.client()
    a.join()
    await a.expect("searching")
    b.join()
    await a.expect("matched")
    await b.expect("matched")
    a.send("message", {"content": "over TLS"})  # across instances: through Redis
    assert (await b.expect("message"))["data"]["content"] == "over TLS"
    await eventually(lambda: one.engine.liveness.counters["renewals"] > 2, what="lease renewals")
    assert tls_redis.server.client("ACL", "WHOAMI") == "default"  # the harness; anygle is:
    assert "anygle" in tls_redis.server.client("CLIENT", "LIST")


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
