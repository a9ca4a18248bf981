"""Frame encoding: msgpack in binary frames, JSON in text frames (handy with wscat)."""

from __future__ import annotations

import json
from typing import Any

import msgpack

from anygle.errors import ClientError

MAX_FRAME = 16 * 1024  # the seed's WebSocket message size limit

_packer = msgpack.Packer()  # reused: packb() would build a new Packer for every frame


def decode(payload: bytes, is_binary: bool) -> dict[str, Any]:
    """Parse one client frame into a map with a string ``type``; anything else is ``BAD_FRAME``."""
    if len(payload) > MAX_FRAME:
        raise ClientError("FRAME_TOO_LARGE", f"frames are limited to {MAX_FRAME} bytes")
    try:
        if is_binary:
            obj = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True)
        else:
            obj = json.loads(payload)
    except Exception as e:
        kind = "msgpack" if is_binary else "JSON"
        raise ClientError("BAD_FRAME", f"not valid {kind}: {type(e).__name__}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ClientError("BAD_FRAME", "a frame is a map with a string 'type'")
    return obj


def encode_binary(frame: dict[str, Any]) -> bytes:
    packed: bytes = _packer.pack(frame)  # msgpack has no type hints
    return packed


def encode_text(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode()


class Broadcast:
    """One frame for many clients: encoded once per format, framed once per format (Autobahn's
    ``prepareMessage``), instead of once per client."""

    __slots__ = ("_prepared", "frame")

    def __init__(self, frame: dict[str, Any]) -> None:
        self.frame = frame
        self._prepared: dict[bool, Any] = {}

    def prepared(self, factory: Any, as_json: bool) -> Any:
        prepared = self._prepared.get(as_json)
        if prepared is None:
            payload = encode_text(self.frame) if as_json else encode_binary(self.frame)
            prepared = self._prepared[as_json] = factory.prepareMessage(payload, not as_json)
        return prepared
