"""docker-compose.yml and the Dockerfile, run for real with podman + podman-compose: build, start
three replicas behind nginx, chat through nginx's one port, kill and stop replicas, take it down.

Not part of the everyday suite (building the image takes minutes): ``deploy/container/test.sh``
makes the base images it needs and runs this; ``.ci/run`` calls that.  The tests run in order
against one deployment."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

from tests.harness import eventually, free_port, wait_for
from tests.wsclient import Client, match

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "anygletest"
REPLICAS = 3
COMPOSE = [str(Path(sys.executable).with_name("podman-compose")), "-p", PROJECT]
LABEL = f"label=io.podman.compose.project={PROJECT}"
RESULTS = ROOT / "bench" / "results" / "container.json"


def sh(*argv: str, env: dict[str, str] | None = None, timeout: float = 900) -> str:
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode:
        raise AssertionError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def containers(*filters: str, all_: bool = False) -> list[str]:
    argv = ["podman", "ps", "--format", "{{.Names}}", "--filter", LABEL]
    for f in filters:
        argv += ["--filter", f]
    return sorted(sh(*argv, *(["-a"] if all_ else [])).split())


def replica_stats(name: str) -> dict[str, Any]:
    """One replica's own /stats, asked at its address on the compose network (no port of it is
    published; the host reaches the network's addresses)."""
    address = sh(
        "podman",
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ).strip()
    with urllib.request.urlopen(f"http://{address}:3000/stats", timeout=5) as reply:
        stats: dict[str, Any] = json.load(reply)
    return stats


@dataclass
class Deployment:
    port: int
    tls_port: int
    env: dict[str, str]
    figures: dict[str, Any] = field(default_factory=dict)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    async def client(self, n: int) -> Client:
        """A client through nginx, from an address of its own: nginx passes X-Forwarded-For on,
        and the replicas believe it only if the compose network is a trusted proxy; otherwise
        all clients would share one address and its five-connection cap."""
        return await Client.connect(self.port, headers={"X-Forwarded-For": f"198.51.100.{n}"})


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    port, tls_port = free_port(), free_port()
    env = {
        **os.environ,
        "HTTP_PORT": str(port),
        "HTTPS_PORT": str(tls_port),
        "BUILDAH_FORMAT": "docker",  # podman keeps HEALTHCHECK only in Docker's image format
    }
    sh(*COMPOSE, "down", "--remove-orphans", "-v", env=env)
    figures: dict[str, Any] = {}
    started = time.monotonic()
    sh(*COMPOSE, "build", env=env)
    figures["build_s"] = round(time.monotonic() - started, 1)
    size = sh("podman", "image", "inspect", "--format", "{{.Size}}", "localhost/anygle:latest")
    base = sh("podman", "image", "inspect", "--format", "{{.Size}}", "debian:bookworm-slim")
    figures["image_mb"] = round(int(size) / 1e6, 1)
    figures["base_image_mb"] = round(int(base) / 1e6, 1)
    deployment = Deployment(port, tls_port, env, figures)
    figures["up_started"] = time.monotonic()
    sh(*COMPOSE, "up", "-d", "--scale", f"anygle={REPLICAS}", env=env)
    try:
        yield deployment
    finally:
        subprocess.run(
            [*COMPOSE, "down", "--remove-orphans", "-v"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            check=False,
        )
        figures.pop("up_started", None)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\ncontainer deployment: {figures}")


@pytest_twisted.ensureDeferred
async def test_two_strangers_meet_through_nginx(deployment: Deployment) -> None:
    def healthy() -> bool:
        try:
            return deployment.get("/health")[0] == 200
        except OSError:
            return False

    await eventually(healthy, timeout=180, step=0.5, what="/health through nginx")
    a, b = await deployment.client(1), await deployment.client(2)
    await match(a, b)
    deployment.figures["up_to_first_match_s"] = round(
        time.monotonic() - deployment.figures["up_started"], 1
    )
    a.send("message", {"content": "hello through the container"})
    frame = await b.expect("message")
    assert frame["data"]["content"] == "hello through the container"
    await a.close()
    await b.close()
    status, body = deployment.get("/")
    assert status == 200 and b"<html" in body.lower()  # the web client, through nginx


def test_https_with_the_certificate_made_for_local_tries(deployment: Deployment) -> None:
    """The tls service made a CA and a certificate for localhost; nginx serves it on 8443."""
    volume = sh("podman", "volume", "inspect", "--format", "{{.Mountpoint}}", f"{PROJECT}_tls")
    context = ssl.create_default_context(cafile=str(Path(volume.strip()) / "ca.pem"))
    url = f"https://localhost:{deployment.tls_port}/health"
    with urllib.request.urlopen(url, context=context, timeout=10) as reply:
        assert reply.status == 200 and json.load(reply)["status"] == "ok"


def test_every_replica_is_healthy_and_logs_to_the_runtime(deployment: Deployment) -> None:
    replicas = containers("label=io.podman.compose.service=anygle")
    assert len(replicas) == REPLICAS, replicas
    for name in replicas:
        health = sh("podman", "inspect", "--format", "{{json .Config.Healthcheck}}", name)
        assert "/health" in health, f"{name}: the image's HEALTHCHECK was dropped: {health}"

        def healthy(n: str = name) -> bool:
            run = subprocess.run(["podman", "healthcheck", "run", n], capture_output=True)
            return run.returncode == 0

        wait_for(healthy, 60, f"{name} healthy", step=1)
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True).stdout
        assert "AnygleFactory starting on 3001" in logs, logs[-2000:]
        assert replica_stats(name)["instance"]["id"].startswith(
            sh("podman", "inspect", "--format", "{{.Config.Hostname}}", name).strip()
        )
    ids = {replica_stats(name)["instance"]["id"] for name in replicas}
    assert len(ids) == REPLICAS, ids


def replicas_of(clients: list[Client]) -> dict[Client, str]:
    """The replica (container) each client is connected to: its session in Redis
    (``user:{userId}``) names the instance, and each replica's ``/stats`` its own id."""
    by_instance = {
        replica_stats(name)["instance"]["id"]: name
        for name in containers("label=io.podman.compose.service=anygle")
    }
    redis = containers("label=io.podman.compose.service=redis")[0]
    keys = [f"user:{c.user_id}" for c in clients]
    sessions = sh("podman", "exec", redis, "redis-cli", "MGET", *keys).splitlines()
    return {
        c: by_instance[json.loads(session)["instance"]]
        for c, session in zip(clients, sessions, strict=True)
    }


async def chats_across_replicas(
    deployment: Deployment, count: int, first: int
) -> tuple[list[tuple[Client, Client]], dict[Client, str]]:
    """``count`` clients through nginx, matched in pairs that cross replicas where they can:
    sorted by replica, client i chats with client i + count/2, so at least one chat crosses
    once nginx has put clients on two replicas.  Returns the pairs and each one's replica."""
    clients = [await deployment.client(first + n) for n in range(count)]
    place = replicas_of(clients)
    ordered = sorted(clients, key=place.__getitem__)
    half = count // 2
    pairs = [(ordered[i], ordered[i + half]) for i in range(half)]
    for a, b in pairs:
        await match(a, b)
    return pairs, place


async def close_all(pairs: list[tuple[Client, Client]]) -> None:
    for pair in pairs:
        for c in pair:
            await c.close()


@pytest_twisted.ensureDeferred
async def test_killing_a_replica_ends_only_its_own_users_chats(deployment: Deployment) -> None:
    pairs, place = await chats_across_replicas(deployment, 4 * REPLICAS, 10)
    try:
        load = Counter(place.values())
        assert len(load) == REPLICAS, f"nginx did not spread the connections: {load}"
        victim = next(place[a] for a, b in pairs if place[a] != place[b])
        on_victim = {c for c in place if place[c] == victim}
        sh("podman", "kill", "--signal", "KILL", victim)
        await eventually(
            lambda: {c for c in place if c.closed.called} == on_victim,
            timeout=30,
            what=f"the {len(on_victim)} users of {victim} cut off, and only they",
        )
        # Newcomers at once, before nginx has reloaded: least_conn picks the dead replica first
        # (it holds no connections now), whose address no longer answers; nginx must move on
        # in time.
        started = time.monotonic()
        for n in range(2):
            await (await deployment.client(30 + n)).close()
        took = round(time.monotonic() - started, 1)
        deployment.figures["kill"] = {"newcomers_connected_s": took}
        told = 0
        for a, b in pairs:
            if a in on_victim and b in on_victim:
                continue
            if a in on_victim or b in on_victim:
                alive = b if a in on_victim else a
                await alive.expect("partner_disconnected", timeout=30)
                told += 1
            else:  # both elsewhere: the chat goes on, in both directions
                for x, y in ((a, b), (b, a)):
                    x.send("message", {"content": f"still here {x.user_id}"})
                    assert (await y.expect("message", timeout=10))["data"]["content"].endswith(
                        str(x.user_id)
                    )
        assert told, "no chat crossed to the killed replica: the test proved nothing"
        deployment.figures["kill"].update(cut_off=len(on_victim), partners_told=told)
    finally:
        await close_all(pairs)


@pytest_twisted.ensureDeferred
async def test_a_stopped_replica_drains_and_exits_in_time(deployment: Deployment) -> None:
    pairs, place = await chats_across_replicas(deployment, 2 * REPLICAS, 40)
    try:
        victim = next(place[a] for a, b in pairs if place[a] != place[b])
        on_victim = {c for c in place if place[c] == victim}
        started = time.monotonic()
        # SIGTERM (SIGKILL after the compose file's 10 s), in a thread: the clients, in this
        # reactor, answer the close handshake meanwhile as real clients do
        await threads.deferToThread(sh, "podman", "stop", victim)
        took = time.monotonic() - started
        code = sh("podman", "inspect", "--format", "{{.State.ExitCode}}", victim).strip()
        why = f"{victim} did not exit by itself on SIGTERM (exit {code}, {took:.1f} s)"
        assert code == "0", why
        deployment.figures["graceful_stop_s"] = round(took, 1)
        await eventually(lambda: {c for c in place if c.closed.called} == on_victim, timeout=10)
        for a, b in pairs:
            if (a in on_victim) != (b in on_victim):  # told at once by the draining replica
                alive = b if a in on_victim else a
                await alive.expect("partner_disconnected", timeout=5)
    finally:
        await close_all(pairs)
    sh("podman", "start", victim)


def test_a_replica_stops_in_time_after_redis_went_away(deployment: Deployment) -> None:
    """Redis's container stopped first (its name no longer resolves): a replica's stop must not
    wait for the name lookups of its reconnection attempts."""
    sh("podman", "stop", containers("label=io.podman.compose.service=redis")[0])
    time.sleep(5)  # reconnection attempts, with lookups of the name `redis`, are under way
    victim = containers("label=io.podman.compose.service=anygle")[0]
    started = time.monotonic()
    sh("podman", "stop", victim)
    took = time.monotonic() - started
    code = sh("podman", "inspect", "--format", "{{.State.ExitCode}}", victim).strip()
    assert code == "0" and took < 10, f"{victim}: exit {code} after {took:.1f} s"
    deployment.figures["stop_without_redis_s"] = round(took, 1)


def test_down_leaves_nothing_running(deployment: Deployment) -> None:
    sh(*COMPOSE, "down", "--remove-orphans", "-v", env=deployment.env)
    assert containers(all_=True) == []
    assert PROJECT not in sh("podman", "network", "ls", "--format", "{{.Name}}")
