"""Redis over TLS with an ACL user, as managed Redis services require (issue 20, item 3): a real
``redis-server --tls-port`` with a CA the test makes; the instance checks the server's
certificate (its CA, its address), logs in as its ACL user, and its lease thread (a socket of
its own) goes through TLS too.  A wrong CA or password is the reason ``/health`` gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from tests.harness import RedisServer, eventually, free_port, load_selfsigned

pytestmark = [
    pytest.mark.slow,  # a redis-server of its own, TLS handshakes
    pytest.mark.parametrize("engine_name", ["redis"], indirect=True),
]


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


@pytest_twisted.ensureDeferred
async def test_another_ca_or_a_wrong_password_is_the_health_reason(
    make_server, tls_redis, tmp_path
):
    load_selfsigned().write(str(tmp_path), ["127.0.0.1"])  # a CA that did not sign the server
    server = await make_server(
        engine="redis",
        redis=tls_redis.url(),
        redis_tls_ca=str(tmp_path / "ca.pem"),
        wait_ready=False,
    )
    await eventually(lambda: "TLS handshake failed" in server.engine.health()[1], what="refused")
    assert "certificate verify failed" in server.engine.health()[1]
    server = await make_server(
        engine="redis",
        redis=tls_redis.url("not-it"),
        redis_tls_ca=str(tls_redis.dir / "ca.pem"),
        wait_ready=False,
    )
    await eventually(lambda: "could not auth" in server.engine.health()[1], what="auth refused")
    assert "WRONGPASS" in server.engine.health()[1]
    server = await make_server(  # the certificate names 127.0.0.1, not localhost
        engine="redis",
        redis=tls_redis.url().replace("127.0.0.1", "localhost"),
        redis_tls_ca=str(tls_redis.dir / "ca.pem"),
        wait_ready=False,
    )
    await eventually(lambda: "does not name" in server.engine.health()[1], what="name refused")
