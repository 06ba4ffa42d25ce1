"""A TCP proxy on loopback that can stall: a half-open peer for tests.

It forwards every connection to a target port until :meth:`StallingProxy.stall`; from then on, the connections it
carries forward nothing more, either way, and stay open: what a client sees behind a NAT entry that was dropped, a
network that went silent, or a server that hangs (the kernel still acknowledges what the client sends). A
connection made after the stall is forwarded again, as over a new route.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Any


class StallingProxy:
    """Forward ``127.0.0.1:<port>`` to ``host:target_port``, until told to stall.

    :param target_port: where to forward to.
    :param host: the target's host.
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)  # the accept loop sees stop() within that
        self.port: int = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self._threads = [threading.Thread(target=self._accept, name="proxy accept", daemon=True)]

    def start(self) -> StallingProxy:
        self._threads[0].start()
        return self

    def stall(self) -> int:
        """Stop forwarding on every connection open now; the number of connections stalled."""
        with self._lock:
            for _client, _server, stalled in self._pairs:
                stalled.set()
            return len(self._pairs)

    def stop(self) -> None:
        """Close every connection and the listening socket."""
        self._closing.set()
        self._listener.close()
        with self._lock:
            for client, server, _stalled in self._pairs:
                for sock in (client, server):
                    with contextlib.suppress(OSError):
                        sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                continue  # the listener closed (stop), or the target refused this one
            client.settimeout(None)
            server.settimeout(None)
            pair = (client, server, threading.Event())
            with self._lock:
                self._pairs.append(pair)
            thread = threading.Thread(target=self._forward, args=pair, name="proxy forward", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _forward(self, client: socket.socket, server: socket.socket, stalled: threading.Event) -> None:
        peer = {client: server, server: client}
        try:
            while not self._closing.is_set():
                if stalled.is_set():
                    self._closing.wait(0.1)
                    continue
                readable, _, _ = select.select([client, server], [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> StallingProxy:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
