"""A TCP proxy whose connections a test can cut the way a network does: no close frame, no FIN,
an RST (``SO_LINGER`` 0) to both ends at once -- a phone that switched from Wi-Fi to mobile data.

One thread, ``selectors`` over blocking sockets (a readable socket is read, the bytes are written
to its peer with ``sendall``: loopback, small frames).  :meth:`cut` resets every current
connection; with ``refuse=True`` new ones are reset on arrival too (no network) until
:meth:`restore`.  The listener stays open throughout, so the client's reconnect finds it.

    proxy = TcpCut(target_port, listen_host="127.0.0.2", listen_port=target_port)
    ...
    proxy.cut(refuse=True)   # both ends see a reset, new connections are reset
    proxy.restore()          # new connections are forwarded again
    proxy.close()
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    except OSError:
        pass
    sock.close()


class TcpCut:
    """Forwards ``listen_host:listen_port`` (0: a free port, see :attr:`port`) to
    ``target_host:target_port``."""

    def __init__(
        self,
        target_port: int,
        target_host: str = "127.0.0.1",
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
    ) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server((listen_host, listen_port), backlog=64)
        self.host, self.port = self.listener.getsockname()[:2]
        self.refusing = False
        self.cuts = 0  # connections reset by cut() and while refusing
        self.forwarded = 0  # connections forwarded
        self._peers: dict[socket.socket, socket.socket] = {}
        self._calls: list[tuple[Callable[[], Any], threading.Event]] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._run_calls)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"tcpcut:{self.port}", daemon=True)
        self._thread.start()

    # --- what a test calls (from its own thread; done in the proxy's thread) ------------------
    def cut(self, refuse: bool = False) -> int:
        """Reset every current connection (both ends); with ``refuse``, new ones too until
        :meth:`restore`.  Returns how many connections were cut."""

        def do() -> int:
            self.refusing = refuse
            socks = list(self._peers)
            for sock in socks:
                self._selector.unregister(sock)
                _reset(sock)
            self._peers.clear()
            self.cuts += len(socks) // 2
            return len(socks) // 2

        return self._call(do)

    def restore(self) -> None:
        """Forward new connections again."""

        def do() -> None:
            self.refusing = False

        self._call(do)

    def connections(self) -> int:
        return self._call(lambda: len(self._peers) // 2)

    def close(self) -> None:
        if self._closed:
            return
        self.cut()
        self._closed = True
        self._wake_w.send(b"x")
        self._thread.join(5)
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> TcpCut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the proxy's thread -------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any]) -> Any:
        done = threading.Event()
        box: list[Any] = []
        with self._lock:
            self._calls.append((lambda: box.append(fn()), done))
        self._wake_w.send(b"x")
        if not done.wait(10):
            raise TimeoutError("the proxy thread did not answer")
        return box[0]

    def _run_calls(self, _sock: socket.socket) -> None:
        self._wake_r.recv(4096)
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, done in calls:
            try:
                fn()
            finally:
                done.set()

    def _loop(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select():
                key.data(key.fileobj)
        self._selector.close()

    def _accept(self, _sock: socket.socket) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        if self.refusing:
            self.cuts += 1
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peers[client], self._peers[upstream] = upstream, client
        self._selector.register(client, selectors.EVENT_READ, self._forward)
        self._selector.register(upstream, selectors.EVENT_READ, self._forward)
        self.forwarded += 1

    def _forward(self, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            data = b""
        # one side closed (or failed): close both, as a plain FIN (a clean end stays clean)
        for s in (sock, peer):
            self._selector.unregister(s)
            self._peers.pop(s, None)
            s.close()
