"""twistd plugin: ``twistd -n anygle``.  Twisted imports ``anygle.tap`` only when it is used."""

from twisted.application.service import ServiceMaker

Anygle = ServiceMaker(
    "Anygle",
    "anygle.tap",
    "Anonymous 1:1 stranger chat over WebSocket (matching, relay, moderation)",
    "anygle",
)
