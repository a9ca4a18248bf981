"""HTTP: ``GET /health`` and ``GET /stats`` as JSON; every other path is a JSON 404."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from anygle.engine.base import Stats
from anygle.hub import Hub

_log = Logger(namespace="anygle.web")


def _write_json(request: Request, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, separators=(",", ":")).encode()


class JsonPage(Resource):
    isLeaf = True

    def __init__(self, hub: Hub, engine_name: str, instance_id: str) -> None:
        super().__init__()
        self.hub = hub
        self.engine_name = engine_name
        self.instance_id = instance_id

    def render(self, request: Request) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _write_json(request, 405, {"error": "method not allowed"})
        return super().render(request)

    def render_HEAD(self, request: Request) -> bytes | int:
        return self.render_GET(request)


class Health(JsonPage):
    """Tells the truth: 503 with the reason when the engine cannot reach shared state."""

    def render_GET(self, request: Request) -> bytes:
        ok, reason = self.hub.engine.health()
        body = {
            "status": "ok" if ok else "unavailable",
            "instanceId": self.instance_id,
            "engine": self.engine_name,
            "uptime": round(self.hub.clock.seconds() - self.hub.started_at, 3),
        }
        if not ok:
            body["reason"] = reason
        return _write_json(request, 200 if ok else 503, body)


class StatsPage(JsonPage):
    def render_GET(self, request: Request) -> int:
        request.notifyFinish().addErrback(lambda _: setattr(request, "anygle_gone", True))
        d: Deferred[Stats] = self.hub.engine.stats()
        d.addCallbacks(self._ok, self._failed, callbackArgs=(request,), errbackArgs=(request,))
        return NOT_DONE_YET

    def _ok(self, stats: Stats, request: Request) -> None:
        body = {
            "totalOnline": stats.total_online,
            "inQueue": stats.in_queue,
            "activeChats": stats.active_chats,
            "avgMatchTime": stats.avg_match_time,
            "totalMatches": stats.total_matches,
            "queues": stats.queues,
            "instance": {"id": self.instance_id, "connections": len(self.hub.sessions)},
        }
        self._finish(request, 200, body)

    def _failed(self, failure: Any, request: Request) -> None:
        _log.failure("stats failed", failure)
        self._finish(request, 503, {"error": "stats unavailable", "reason": str(failure.value)})

    def _finish(self, request: Request, status: int, body: dict[str, Any]) -> None:
        if request.finished or getattr(request, "anygle_gone", False):
            return
        request.write(_write_json(request, status, body))
        request.finish()


class NotFound(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _write_json(request, 404, {"error": "not found", "path": request.path.decode()})


class Root(Resource):
    def __init__(self, hub: Hub, engine_name: str, instance_id: str) -> None:
        super().__init__()
        self.pages: dict[bytes, Resource] = {
            b"health": Health(hub, engine_name, instance_id),
            b"stats": StatsPage(hub, engine_name, instance_id),
        }

    def getChild(self, path: bytes, request: Request) -> Resource:
        if request.postpath:  # /health/extra
            return NotFound()
        return self.pages.get(path, NotFound())

    def render(self, request: Request) -> bytes:
        return NotFound().render(request)
