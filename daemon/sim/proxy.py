"""A TCP proxy on loopback standing in for Azure Cache for Redis's load balancer: clients connect
to one address, the proxy forwards each new connection to the node that is primary now. A
failover switches the target, and either closes the connections already open (as Azure's
demoted primary does) or leaves them on the old node (a proxy that keeps them, a pinned address):
what a client must survive either way. It also counts the clients' round trips: a request that
follows a reply (or opens a connection) is one, however many commands it pipelines."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from daemon.sim.redis_server import free_port

_CHUNK_BYTES = 65_536


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self.round_trips = 0

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def switch(self, target_port: int, *, close_open: bool) -> None:
        """New connections go to `target_port`; those open are closed, or left where they are."""
        with self._lock:
            self.target_port = target_port
            pairs, self._pairs = (self._pairs, []) if close_open else ([], self._pairs)
        for pair in pairs:
            _close(*pair)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            _close(*pair)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                target = self.target_port
            try:
                upstream = socket.create_connection(("127.0.0.1", target), timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            replied = [True]  # this pair's last data went to the client: a request is new
            for source, sink, asks in ((client, upstream, True), (upstream, client, False)):
                args = (source, sink, asks, replied)
                threading.Thread(target=self._pump, args=args, daemon=True).start()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _pump(
        self, source: socket.socket, sink: socket.socket, asks: bool, replied: list[bool]
    ) -> None:
        try:
            while data := source.recv(_CHUNK_BYTES):
                if asks and replied[0]:
                    with self._lock:
                        self.round_trips += 1
                replied[0] = not asks
                sink.sendall(data)
        except OSError:
            pass
        _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    for each in sockets:
        with contextlib.suppress(OSError):
            each.shutdown(socket.SHUT_RDWR)
        each.close()
