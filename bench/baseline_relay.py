"""The limit reference: a bare Autobahn/Twisted relay with no application logic.

``python -m bench.baseline_relay --port PORT [--interface 127.0.0.1]``

Two sockets that connect with the same ``?p=KEY`` query form a pair; every frame one of them sends
is forwarded unchanged to the other.  That is all: no decoding, no validation, no queue, no
engine.  So that the same load client drives it and anygle, it says ``connected`` on open and
``matched {isInitiator}`` to both sockets when the pair is complete (pre-packed bytes, once per
connection — not on the relay path).  Autobahn options are the ones anygle's factory sets, so the
difference measured against anygle is our code, not configuration.
"""

from __future__ import annotations

import argparse
import resource
import sys
from typing import Any

import msgpack
from twisted.internet import epollreactor

epollreactor.install()

from autobahn.twisted.websocket import (  # noqa: E402
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from twisted.internet import reactor  # noqa: E402

CONNECTED = msgpack.packb({"type": "connected", "data": {"userId": "baseline"}})
MATCHED = {
    flag: msgpack.packb(
        {
            "type": "matched",
            "data": {
                "roomId": "baseline",
                "partnerId": "baseline",
                "mode": "text",
                "isInitiator": flag,
                "partnerInfo": {"interests": [], "sharedInterests": []},
            },
        }
    )
    for flag in (True, False)
}


class RelayProtocol(WebSocketServerProtocol):
    factory: RelayFactory

    def __init__(self) -> None:
        super().__init__()
        self.partner: RelayProtocol | None = None
        self.key = ""

    def onConnect(self, request: Any) -> None:
        self.key = (request.params.get("p") or [""])[0]

    def onOpen(self) -> None:
        self.sendMessage(CONNECTED, isBinary=True)
        waiting = self.factory.waiting
        other = waiting.pop(self.key, None)
        if other is None:
            waiting[self.key] = self
            return
        self.partner, other.partner = other, self
        other.sendMessage(MATCHED[True], isBinary=True)
        self.sendMessage(MATCHED[False], isBinary=True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        partner = self.partner
        if partner is not None:
            partner.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.factory.waiting.get(self.key) is self:
            del self.factory.waiting[self.key]
        partner, self.partner = self.partner, None
        if partner is not None:
            partner.partner = None


class RelayFactory(WebSocketServerFactory):
    # Twisted's Factory is generic in its protocol and Autobahn's factory does not say which:
    # a protocol that names its own factory type is refused (as in anygle.protocol).
    protocol = RelayProtocol  # type: ignore[assignment]

    def __init__(self, ping_interval: float = 25.0) -> None:
        super().__init__()
        self.waiting: dict[str, RelayProtocol] = {}
        # the same options as anygle's AnygleFactory
        self.setProtocolOptions(
            maxFramePayloadSize=64 * 1024,
            maxMessagePayloadSize=64 * 1024,
            autoPingInterval=ping_interval,
            autoPingTimeout=10.0,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
            tcpNoDelay=True,
            allowedOrigins=["*"],
            allowNullOrigin=True,
            trustXForwardedFor=0,
            perMessageCompressionAccept=lambda offers: None,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--backlog", type=int, default=1024)
    parser.add_argument("--ping-interval", type=float, default=25.0, help="as anygle's option")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory = RelayFactory(args.ping_interval)
    reactor.listenTCP(args.port, factory, backlog=args.backlog, interface=args.interface)
    sys.stdout.write(f"baseline relay on {args.interface}:{args.port}\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
