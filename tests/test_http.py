"""/health, /stats, /metrics and the web client's files over real HTTP."""

from __future__ import annotations

import html
import json
import re
from importlib import metadata
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from zope.interface import provider

from anygle.web import CLIENT_FILES
from tests.conftest import ServerHandle


async def get(
    port: int, path: str, method: bytes = b"GET", headers: dict[str, str] | None = None
) -> tuple[int, dict, bytes]:
    """``(status, {header: first value}, body)``."""
    response = await Agent(reactor).request(
        method,
        f"http://127.0.0.1:{port}{path}".encode(),
        Headers({k: [v] for k, v in (headers or {}).items()}),
    )
    body = await readBody(response)
    got = {k.decode().lower(): v[0] for k, v in response.headers.getAllRawHeaders()}
    got.setdefault("content-type", b"")
    return response.code, got, body


async def one_chat_and_one_waiting(server: ServerHandle) -> None:
    """Three users online: a chat, and one user waiting in the adult voice queue."""
    await server.pair()
    waiting = await server.client()
    waiting.join(mode="voice")
    await waiting.expect("searching")


@pytest_twisted.ensureDeferred
async def test_health(server):
    code, headers, body = await get(server.http_port, "/health")
    assert code == 200 and headers["content-type"] == b"application/json"
    data = json.loads(body)
    assert data["status"] == "ok"
    assert data["instanceId"] == server.service.settings.instance_id
    assert data["engine"] == server.service.settings.engine
    assert isinstance(data["uptime"], float) and data["uptime"] >= 0


@pytest_twisted.ensureDeferred
async def test_stats_counts_users_queue_and_chats(server):
    await one_chat_and_one_waiting(server)
    code, _, body = await get(server.http_port, "/stats")
    assert code == 200
    data = json.loads(body)
    assert data["totalOnline"] == 3
    assert data["inQueue"] == 1
    assert data["activeChats"] == 1
    assert data["totalMatches"] == 1
    assert data["avgMatchTime"] >= 0
    assert data["queues"] == {"adult:voice:moderated": 1}


@pytest_twisted.ensureDeferred
async def test_other_paths_are_json_404_and_methods_405(server):
    for path in ("/nope", "/health/x", "/stats/", "/client/", "/client/nope.js", "/index.html"):
        code, headers, body = await get(server.http_port, path)
        assert code == 404 and headers["content-type"] == b"application/json", path
        assert json.loads(body)["error"] == "not found"
    code, _, body = await get(server.http_port, "/health", b"POST")
    assert code == 405 and json.loads(body)["error"] == "method not allowed"


@pytest_twisted.ensureDeferred
async def test_metrics_in_prometheus_format(server):
    await one_chat_and_one_waiting(server)
    code, headers, body = await get(server.http_port, "/metrics")
    assert code == 200 and headers["content-type"].startswith(b"text/plain; version=0.0.4")
    text = body.decode()
    assert "anygle_online_users 3.0" in text
    assert "anygle_active_chats 1.0" in text
    assert 'anygle_queue_users{queue="adult:voice:moderated"} 1.0' in text
    assert "anygle_matches_total 1.0" in text
    instance = server.service.settings.instance_id
    assert f'anygle_instance_connections{{instance="{instance}"}} 3.0' in text


def page_config(body: bytes) -> dict:
    """The JSON the server put into the page's ``<meta name="anygle-config">``."""
    match = re.search(rb'<meta name="anygle-config" content="([^"]*)">', body)
    assert match, body[:500]
    return json.loads(html.unescape(match.group(1).decode()))


# The web client does not depend on the engine: its tests run on the memory engine only.
@pytest.mark.parametrize("engine_name", ["memory"])
@pytest_twisted.ensureDeferred
async def test_web_client_page_and_its_files(server):
    code, headers, body = await get(server.http_port, "/")
    assert code == 200 and headers["content-type"] == b"text/html; charset=utf-8"
    assert b"default-src 'self'" in headers["content-security-policy"]
    # a direct request: the page connects to the WebSocket listener's port on the same host
    assert page_config(body) == {"wsPort": server.ws_port}
    # through a proxy: to the page's own origin (nginx routes the upgrade on / to the listener)
    for header in ("x-forwarded-for", "x-real-ip"):
        _, _, proxied = await get(server.http_port, "/", headers={header: "198.51.100.7"})
        assert page_config(proxied) == {}, header
    for path in re.findall(rb'(?:src|href)="(/client/[^"]+)"', body):
        code, headers, content = await get(server.http_port, path.decode())
        assert code == 200 and content, path
        assert headers["content-type"] == CLIENT_FILES[path][1], path
        assert headers["x-content-type-options"] == b"nosniff"
        # revalidation: the same ETag gives 304 without a body
        code, _, content = await get(
            server.http_port, path.decode(), headers={"if-none-match": headers["etag"].decode()}
        )
        assert code == 304 and content == b"", path
    code, _, _ = await get(server.http_port, "/", b"POST")
    assert code == 405


@pytest.mark.parametrize("engine_name", ["memory"])
@pytest_twisted.ensureDeferred
async def test_head_of_the_page_has_no_body_and_logs_nothing(server):
    """Load balancers and uptime checkers send ``HEAD /``: each one used to log a warning."""
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        _, _, page = await get(server.http_port, "/")
        code, headers, body = await get(server.http_port, "/", b"HEAD")
    finally:
        globalLogPublisher.removeObserver(observe)
    assert code == 200 and body == b""
    assert headers["content-length"] == str(len(page)).encode()
    assert headers["content-type"] == b"text/html; charset=utf-8"
    warnings = [e for e in events if "message body" in str(e.get("log_format", ""))]
    assert warnings == []


@pytest.mark.parametrize("engine_name", ["memory"])
@pytest_twisted.ensureDeferred
async def test_web_client_pinned_url_and_not_counted_by_the_rate_limit(make_server):
    server = await make_server(web_client_ws_url="wss://chat.example/", rate_limit=3)
    _, _, body = await get(server.http_port, "/", headers={"x-forwarded-for": "198.51.100.7"})
    assert page_config(body) == {"wsUrl": "wss://chat.example/"}
    # a page load is four files: they are not counted, the pages that cost something are
    for _ in range(3):
        for path in ("/", "/client/app.js", "/client/app.css", "/client/vendor/msgpack.min.js"):
            code, _, _ = await get(server.http_port, path)
            assert code == 200, path
    codes = [(await get(server.http_port, "/health"))[0] for _ in range(4)]
    assert codes == [200, 200, 200, 429]


@pytest.mark.parametrize("engine_name", ["memory"])
@pytest_twisted.ensureDeferred
async def test_web_client_can_be_turned_off(make_server):
    server = await make_server(web_client=False)
    for path in ("/", "/client/app.js"):
        code, headers, _ = await get(server.http_port, path)
        assert code == 404 and headers["content-type"] == b"application/json", path


def test_installed_package_ships_the_web_client():
    """``pip install .`` (what .ci/install does) puts the page, its files and the vendored
    library with its licence into site-packages."""
    dist = metadata.distribution("anygle")
    direct = dist.read_text("direct_url.json")
    if direct and json.loads(direct).get("dir_info", {}).get("editable"):
        pytest.skip("an editable install serves the files from the work tree")
    installed = {str(f) for f in dist.files or ()}
    for name, _ in CLIENT_FILES.values():
        assert f"anygle/webclient/{name}" in installed, name
    assert "anygle/webclient/vendor/msgpack.LICENSE" in installed
    here = Path(__file__).resolve().parent.parent / "anygle" / "webclient"
    for name, _ in CLIENT_FILES.values():  # and they are the ones in this tree
        shipped = dist.locate_file(f"anygle/webclient/{name}")
        assert isinstance(shipped, Path)  # a file in site-packages (typed as a SimplePath)
        assert shipped.read_bytes() == (here / name).read_bytes(), (
            f"{name}: reinstall (pip install .)"
        )
