"""Two strangers meet and say hello: a minimal Anygle client (Autobahn + msgpack).

python examples/chat_client.py ws://127.0.0.1:3001
"""

import sys

import msgpack
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor

URL = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:3001"
done = []


class Stranger(WebSocketClientProtocol):
    def send(self, type_, data=None):
        self.sendMessage(msgpack.packb({"type": type_, "data": data}), isBinary=True)

    def onMessage(self, payload, isBinary):
        msg = msgpack.unpackb(payload)
        kind, data = msg["type"], msg.get("data")
        if kind == "connected":
            self.name = data["userId"][:8]
            self.send(
                "join",
                {
                    "ageCategory": "adult",
                    "mode": "text",
                    "queueType": "moderated",
                    "interests": ["music"],
                },
            )
        elif kind == "matched":
            print(
                f"{self.name}: matched in room {data['roomId'][:8]}, "
                f"shared interests {data['partnerInfo']['sharedInterests']}"
            )
            self.send("message", {"content": f"hello from {self.name}"})
        elif kind == "message":
            print(f"{self.name}: got {data['content']!r}")
            self.sendClose(1000)
        elif kind == "error":
            print(f"{self.name}: error {data['code']}: {data['message']}")

    def onClose(self, wasClean, code, reason):
        done.append(self)
        if len(done) == 2:
            reactor.stop()


for _ in range(2):
    factory = WebSocketClientFactory(URL)
    factory.protocol = Stranger
    connectWS(factory)
reactor.callLater(10, reactor.stop)
reactor.run()
