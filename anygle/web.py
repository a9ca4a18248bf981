"""HTTP: ``GET /health`` and ``GET /stats`` as JSON, ``GET /metrics`` for Prometheus, the web
client at ``GET /`` (and its files under ``/client/``); every other path is a JSON 404."""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from anygle.admission import Refused
from anygle.clientip import ClientAddressResolver
from anygle.engine.base import EngineUnavailable
from anygle.fairturns import TurnScheduler
from anygle.hub import Hub
from anygle.metrics import CONTENT_TYPE, Metrics
from anygle.model import Stats
from anygle.reactorlag import ReactorLag
from anygle.stats_view import overview

_log = Logger(namespace="anygle.web")


def _write_json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, separators=(",", ":")).encode()


def _not_get(request: Request) -> bytes | None:
    """The 405 answer for a method other than GET and HEAD (HEAD is answered as GET, Twisted
    drops the body); ``None`` for those two."""
    if request.method in (b"GET", b"HEAD"):
        return None
    request.setHeader(b"allow", b"GET, HEAD")
    return _write_json(request, 405, {"error": "method not allowed"})


class JsonPage(Resource):
    isLeaf = True

    def __init__(self, hub: Hub, engine_name: str, instance_id: str) -> None:
        super().__init__()
        self.hub = hub
        self.engine_name = engine_name
        self.instance_id = instance_id

    def render(self, request: Request) -> bytes | int:
        return _not_get(request) or self.render_GET(request)

    def render_GET(self, request: Request) -> bytes | int:
        raise NotImplementedError


class Health(JsonPage):
    """Tells the truth: 503 with the reason when the engine cannot reach shared state.
    ``reactorLagMs`` is the worst timer lateness of the last 10 s (``anygle/reactorlag.py``).
    With the Redis engine, ``lease`` tells how the instance's liveness lease is kept (see
    anygle/engine/redis/liveness.py): its TTL, the longest gap between two renewals and the
    reactor heartbeat's worst lateness, both since the previous ``/health``."""

    lag: ReactorLag | None = None

    def render_GET(self, request: Request) -> bytes:
        ok, reason = self.hub.health()
        body: dict[str, Any] = {
            "status": "ok" if ok else "unavailable",
            "instanceId": self.instance_id,
            "engine": self.engine_name,
            "uptime": round(self.hub.clock.seconds() - self.hub.started_at, 3),
        }
        if self.lag is not None:
            body["reactorLagMs"] = round(self.lag.recent_max() * 1000.0, 1)
        redis = self.hub.redis()
        if redis is not None:
            body["redis"] = redis
        lease = self.hub.lease()
        if lease is not None:
            body["lease"] = {
                "ttlMs": round(lease["lease_ttl"] * 1000.0),
                "maxRenewalGapMs": round(lease["max_renewal_gap"] * 1000.0, 1),
                "heartbeatLatenessMs": round(lease["max_heartbeat_lateness"] * 1000.0, 1),
            }
        if not ok:
            body["reason"] = reason
        return _write_json(request, 200 if ok else 503, body)


class StatsBackedPage(JsonPage):
    """A page made from the engine's service-wide :class:`Stats` (asked for on every request)."""

    def render_GET(self, request: Request) -> int:
        request.notifyFinish().addErrback(lambda _: setattr(request, "anygle_gone", True))
        page: Deferred[tuple[int, bytes, bytes]] = self.hub.stats().addCallback(self.page)
        page.addErrback(self._failed).addCallback(self._finish, request)
        return NOT_DONE_YET

    def page(self, stats: Stats) -> tuple[int, bytes, bytes]:
        """``(status, content type, body)``."""
        raise NotImplementedError

    def _failed(self, failure: Any) -> tuple[int, bytes, bytes]:
        if not failure.check(EngineUnavailable):  # that one /health and the engine's log tell
            _log.failure("{page} failed", failure, page=type(self).__name__)
        body = {"error": "stats unavailable", "reason": str(failure.value)}
        return 503, b"application/json", json.dumps(body).encode()

    def _finish(self, result: tuple[int, bytes, bytes], request: Request) -> None:
        if request.finished or getattr(request, "anygle_gone", False):
            return
        status, content_type, body = result
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"no-store")
        request.write(body)
        request.finish()


class StatsPage(StatsBackedPage):
    """``anygle.stats_view.overview`` plus ``instance``: its id, connections, and its abuse-key
    table (``anygle.limits``): keys tracked, its cap, and new keys refused since start."""

    def page(self, stats: Stats) -> tuple[int, bytes, bytes]:
        instance: dict[str, Any] = {"id": self.instance_id, "connections": len(self.hub.sessions)}
        instance["abuseKeys"] = self.hub.admission.keys.summary()
        body = {**overview(stats), "instance": instance}
        return 200, b"application/json", json.dumps(body, separators=(",", ":")).encode()


class MetricsPage(StatsBackedPage):
    """Prometheus text format (``anygle/metrics.py``)."""

    def __init__(
        self,
        hub: Hub,
        engine_name: str,
        instance_id: str,
        lag: ReactorLag | None = None,
        turns: TurnScheduler | None = None,
    ) -> None:
        super().__init__(hub, engine_name, instance_id)
        self.metrics = Metrics(instance_id, lag, turns)

    def page(self, stats: Stats) -> tuple[int, bytes, bytes]:
        return 200, CONTENT_TYPE, self.metrics.render(stats, len(self.hub.sessions))


class NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _write_json(request, 404, {"error": "not found", "path": request.path.decode()})


# path -> (file under anygle/webclient/, content type)
CLIENT_FILES: dict[bytes, tuple[str, bytes]] = {
    b"/": ("index.html", b"text/html; charset=utf-8"),
    b"/client/app.js": ("app.js", b"text/javascript; charset=utf-8"),
    b"/client/app.css": ("app.css", b"text/css; charset=utf-8"),
    b"/client/vendor/msgpack.min.js": ("vendor/msgpack.min.js", b"text/javascript; charset=utf-8"),
    b"/client/vendor/msgpack.LICENSE": ("vendor/msgpack.LICENSE", b"text/plain; charset=utf-8"),
}
CONFIG_SLOT = b"{{ANYGLE_CONFIG}}"
# The page loads only its own files; it talks to the WebSocket listener, which may be another
# port of the same host (a different origin to CSP), hence ws:/wss: in connect-src.
PAGE_POLICY = (
    b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    b"media-src 'self' blob: mediastream:; object-src 'none'; base-uri 'none'; "
    b"frame-ancestors 'none'"
)
_PROXY_HEADERS = (b"x-forwarded-for", b"x-real-ip", b"forwarded", b"x-forwarded-host")


class WebClient(Resource):
    """The browser client (``anygle/webclient/``, package data), read once at start-up.

    The page has to know where the WebSocket listener is, and only the request can tell: a
    request that came through a proxy (it carries ``X-Forwarded-For``/``X-Real-IP``) gets an
    empty config and the page connects to its own origin (nginx routes the upgrade on ``/`` to
    the WebSocket listeners); a direct one gets the WebSocket listener's port, and the page
    connects to that port of the host it was loaded from.  ``ws_url`` (``--web-client-ws-url``)
    overrides both for set-ups neither fits (mapped ports, another host)."""

    isLeaf = True

    def __init__(self, ws_url: str = "", ws_port: Callable[[], int | None] = lambda: None) -> None:
        super().__init__()
        self.ws_url = ws_url
        self.ws_port = ws_port
        folder = resources.files("anygle") / "webclient"
        self.files = {
            path: ((folder / name).read_bytes(), ctype)
            for path, (name, ctype) in CLIENT_FILES.items()
        }
        # The files don't change while we run: their ETags are computed once (the page's
        # depends on its per-request config and is computed per request).
        self.etags = {path: _etag(body) for path, (body, _) in self.files.items()}

    def config(self, request: Request) -> dict[str, Any]:
        if self.ws_url:
            return {"wsUrl": self.ws_url}
        if any(request.requestHeaders.hasHeader(h) for h in _PROXY_HEADERS):
            return {}
        port = self.ws_port()
        return {"wsPort": port} if port else {}

    def render(self, request: Request) -> bytes:
        refused = _not_get(request)
        if refused is not None:
            return refused
        body, ctype = self.files[request.path]
        etag = self.etags[request.path]
        if request.path == b"/":
            slot = html.escape(json.dumps(self.config(request), separators=(",", ":")))
            body = body.replace(CONFIG_SLOT, slot.encode())
            etag = _etag(body)
            request.setHeader(b"content-security-policy", PAGE_POLICY)
            request.setHeader(b"referrer-policy", b"no-referrer")
            request.setHeader(b"permissions-policy", b"camera=(self), microphone=(self)")
        request.setHeader(b"content-type", ctype)
        request.setHeader(b"cache-control", b"no-cache")  # revalidated with the ETag
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.setETag(etag):
            return b""  # 304: the browser has it
        if request.method == b"HEAD":  # a GET's headers; a body here would be logged and eaten
            request.setHeader(b"content-length", b"%d" % len(body))
            return b""
        return body


def _etag(body: bytes) -> bytes:
    return b'"%s"' % hashlib.sha256(body).hexdigest()[:20].encode()


class Root(Resource):
    """Dispatches ``/health``, ``/stats``, ``/metrics`` and the web client; every request for
    the first three spends one unit of its client address's per-minute budget, counted by abuse
    key (429 past it; 503 from a new key while the abuse-key table is full).  The web client's
    files are not counted: they are bytes in memory, and a page load (four files) should not eat
    the budget of an address many people share."""

    isLeaf = True

    def __init__(
        self,
        hub: Hub,
        engine_name: str,
        instance_id: str,
        resolver: ClientAddressResolver,
        lag: ReactorLag | None = None,
        turns: TurnScheduler | None = None,
        client: WebClient | None = None,
    ) -> None:
        super().__init__()
        self.hub = hub
        self.resolver = resolver
        self.client = client
        health = Health(hub, engine_name, instance_id)
        health.lag = lag
        self.pages: dict[bytes, Resource] = {
            b"/health": health,
            b"/stats": StatsPage(hub, engine_name, instance_id),
            b"/metrics": MetricsPage(hub, engine_name, instance_id, lag, turns),
        }

    def render(self, request: Request) -> bytes | int:
        if self.client is not None and request.path in self.client.files:
            return self.client.render(request)
        page = self.pages.get(request.path, NotFound())
        real_ip = request.requestHeaders.getRawHeaders("x-real-ip")
        address = self.resolver.client(
            getattr(request.getClientAddress(), "host", "unix"),
            request.requestHeaders.getRawHeaders("x-forwarded-for", []),
            real_ip[-1] if real_ip else None,
        )
        d = Deferred.fromCoroutine(self.hub.admission.request(address))
        d.addCallbacks(lambda _: self._serve(request, page), self._refused, errbackArgs=(request,))
        return NOT_DONE_YET

    def _serve(self, request: Request, page: Resource) -> None:
        self._finish(request, page.render(request))

    def _refused(self, failure: Failure, request: Request) -> None:
        refused = failure.value
        if not isinstance(refused, Refused):
            _log.failure("admission failed", failure)
            self._finish(request, _write_json(request, 500, {"error": "internal error"}))
            return
        request.setHeader(b"retry-after", b"60")
        self._finish(request, _write_json(request, refused.status, {"error": refused.reason}))

    @staticmethod
    def _finish(request: Request, body: bytes | int) -> None:
        if body is not NOT_DONE_YET and not request.finished:
            request.write(body)
            request.finish()
