"""Property-based fuzz (hypothesis) of client frames against a running server: whatever arrives,
the server answers with well-formed frames, error codes from the table, and keeps serving."""

from __future__ import annotations

import json

import msgpack
import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anygle.errors import CODES
from anygle.validate import VALIDATORS
from tests.harness import Instance, limits_off_flags

pytestmark = pytest.mark.slow  # real processes: not in the fast loop

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
known = st.sampled_from(sorted(VALIDATORS))
field_names = st.sampled_from(
    [
        "ageCategory",
        "mode",
        "queueType",
        "interests",
        "interestsOnly",
        "content",
        "reason",
        "isTyping",
        "enabled",
        "sdp",
        "type",
        "candidate",
        "sdpMid",
        "sdpMLineIndex",
    ]
)
plausible_data = st.dictionaries(field_names, values, max_size=6)
frames = st.one_of(
    st.fixed_dictionaries({"type": known, "data": plausible_data | values}),
    st.fixed_dictionaries({"type": st.text(max_size=20) | values, "data": values}),
    values,
)


@pytest.fixture(scope="module")
def server():
    inst = Instance(*limits_off_flags(), name="hypothesis").start()
    yield inst
    assert inst.stop() is not None
    assert "Unhandled" not in inst.output() and "Traceback" not in inst.output()


class Conn:
    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: websocket.WebSocket | None = None

    def get(self) -> websocket.WebSocket:
        if self.ws is None or not self.ws.connected:
            self.ws = websocket.create_connection(self.url, timeout=10)
            assert msgpack.unpackb(self.ws.recv())["type"] == "connected"
        return self.ws


def read_until_pong(ws: websocket.WebSocket) -> list[dict]:
    seen: list[dict] = []
    while True:
        opcode, payload = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return seen
        frame = (
            msgpack.unpackb(payload)
            if opcode == websocket.ABNF.OPCODE_BINARY
            else json.loads(payload)
        )
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str)
        if frame["type"] == "error":
            assert frame["data"]["code"] in CODES, frame
            assert frame["data"]["code"] != "INTERNAL_ERROR", frame
        seen.append(frame)
        if frame["type"] == "pong":
            return seen


@given(frame=frames, as_text=st.booleans())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_frame_gets_a_well_formed_answer(server, frame, as_text):
    conn = _conn(server)
    ws = conn.get()
    if as_text:
        payload = json.dumps(frame, default=repr, allow_nan=True)
        ws.send(payload)
        ws.send(json.dumps({"type": "ping"}))
    else:
        ws.send_binary(msgpack.packb(frame, default=repr))
        ws.send_binary(msgpack.packb({"type": "ping"}))
    frames_back = read_until_pong(ws)
    if not frames_back or frames_back[-1]["type"] != "pong":
        # closed on purpose (TOO_MANY_ERRORS): it said why, and a new connection is served
        assert any(
            f["data"].get("code") == "TOO_MANY_ERRORS" for f in frames_back if f["type"] == "error"
        ), frames_back
        conn.ws = None
        fresh = conn.get()
        fresh.send_binary(msgpack.packb({"type": "ping"}))
        assert read_until_pong(fresh)[-1]["type"] == "pong"


_conns: dict[int, Conn] = {}


def _conn(server: Instance) -> Conn:
    return _conns.setdefault(server.ws_port, Conn(server.url))
