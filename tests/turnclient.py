"""A minimal TURN client (RFC 5389 STUN + RFC 5766 Allocate over UDP), to check credentials
against a real coturn: the long-term credential dance is what browsers do with ``iceServers``.
Blocking, with retransmissions; each allocation uses its own socket (one allocation per 5-tuple)
and is released before the socket closes: the kernel may hand the same local port to a later
socket, and coturn answers 437 (Allocation Mismatch) to a 5-tuple that still holds one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time
from dataclasses import dataclass

MAGIC = 0x2112A442
BINDING, ALLOCATE, REFRESH = 0x0001, 0x0003, 0x0004
SUCCESS, ERROR = 0x0100, 0x0110  # class bits added to the method
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
REALM, NONCE, XOR_RELAYED_ADDRESS, REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0016, 0x0019
UDP_TRANSPORT = bytes([17, 0, 0, 0])


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _message(kind: int, txid: bytes, attrs: bytes, key: bytes | None = None) -> bytes:
    """A STUN message; with ``key``, MESSAGE-INTEGRITY over everything before it (the header's
    length already counting the 24 bytes of the attribute, RFC 5389 15.4)."""
    if key is None:
        return struct.pack("!HHI", kind, len(attrs), MAGIC) + txid + attrs
    head = struct.pack("!HHI", kind, len(attrs) + 24, MAGIC) + txid + attrs
    return head + _attr(MESSAGE_INTEGRITY, hmac.new(key, head, hashlib.sha1).digest())


@dataclass
class Response:
    kind: int
    attrs: dict[int, bytes]
    raw: bytes

    @property
    def error(self) -> int | None:
        """The ERROR-CODE (e.g. 401), or None for a success response."""
        value = self.attrs.get(ERROR_CODE)
        return None if value is None else (value[2] & 7) * 100 + value[3]

    def relayed(self) -> tuple[str, int]:
        value = self.attrs[XOR_RELAYED_ADDRESS]
        port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC >> 16)
        ip = struct.unpack("!I", value[4:8])[0] ^ MAGIC
        return socket.inet_ntoa(struct.pack("!I", ip)), port

    def integrity_ok(self, key: bytes) -> bool:
        """The server signed this response with the same key: it derived the same password."""
        offset, mac = 20, None
        while offset < len(self.raw):
            kind, length = struct.unpack("!HH", self.raw[offset : offset + 4])
            if kind == MESSAGE_INTEGRITY:
                mac = self.raw[offset + 4 : offset + 24]
                break
            offset += 4 + length + (-length % 4)
        if mac is None:
            return False
        head = bytearray(self.raw[:offset])
        struct.pack_into("!H", head, 2, offset - 20 + 24)
        return hmac.compare_digest(mac, hmac.new(key, bytes(head), hashlib.sha1).digest())


def _parse(data: bytes) -> tuple[bytes, Response]:
    kind, length, magic = struct.unpack("!HHI", data[:8])
    assert magic == MAGIC, "not a STUN message"
    attrs: dict[int, bytes] = {}
    offset = 20
    while offset < 20 + length:
        akind, alen = struct.unpack("!HH", data[offset : offset + 4])
        attrs.setdefault(akind, data[offset + 4 : offset + 4 + alen])
        offset += 4 + alen + (-alen % 4)
    return data[8:20], Response(kind, attrs, data)


class TurnClient:
    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.server = (host, port)
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.signed = b""  # USERNAME, REALM, NONCE of the last signed request

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, attrs: bytes, key: bytes | None = None) -> Response:
        """Send, resend every 0.25 s (UDP) until the answer to this transaction or the deadline."""
        txid = os.urandom(12)
        packet = _message(kind, txid, attrs, key)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            self.sock.sendto(packet, self.server)
            self.sock.settimeout(0.25)
            try:
                data, _ = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            got, response = _parse(data)
            if got == txid:
                return response
        raise TimeoutError(f"no answer from {self.server} within {self.timeout} s")

    def allocate(self, username: str, password: str) -> tuple[Response, bytes]:
        """Allocate with long-term credentials: the unauthenticated request gets 401 with the
        realm and nonce; the second one is signed with MD5(username:realm:password)."""
        transport = _attr(REQUESTED_TRANSPORT, UDP_TRANSPORT)
        challenge = self.request(ALLOCATE, transport)
        assert challenge.error == 401, f"expected a 401 challenge, got {challenge.error}"
        realm, nonce = challenge.attrs[REALM], challenge.attrs[NONCE]
        key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
        self.signed = _attr(USERNAME, username.encode()) + _attr(REALM, realm) + _attr(NONCE, nonce)
        return self.request(ALLOCATE, transport + self.signed, key), key

    def release(self, key: bytes) -> Response:
        """Refresh with LIFETIME 0 (RFC 5766 7): the server deletes this 5-tuple's allocation."""
        return self.request(REFRESH, _attr(LIFETIME, bytes(4)) + self.signed, key)


def allocate(host: str, port: int, username: str, password: str) -> tuple[Response, bytes]:
    """One allocation attempt on a fresh socket: (the final response, the long-term key)."""
    client = TurnClient(host, port)
    try:
        response, key = client.allocate(username, password)
        if response.error is None:
            released = client.release(key)
            assert released.error is None, f"releasing the allocation: error {released.error}"
        return response, key
    finally:
        client.close()


def wait_listening(host: str, port: int, timeout: float = 20.0) -> None:
    """Until a STUN Binding request is answered (the TURN server is up)."""
    deadline = time.monotonic() + timeout
    while True:
        client = TurnClient(host, port, timeout=0.5)
        try:
            if client.request(BINDING, b"").kind == BINDING | SUCCESS:
                return
        except (TimeoutError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no TURN server on {host}:{port} after {timeout} s") from None
        finally:
            client.close()
