"""/metrics, /healthz and /readyz on ORCA_HEALTH_ADDR, served from a thread of their own."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import make_wsgi_app

from daemon.metrics import Metrics

Probe = Callable[[], tuple[bool, dict[str, Any]]]


IDLE_TIMEOUT_S = 5.0  # a connection that sends nothing is closed after this
MAX_CONNECTIONS = 16  # beyond this, new connections are closed at once


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per connection, at most MAX_CONNECTIONS at once, none idle past the timeout:
    a scraper that hangs, or a flood, cannot pile up threads in the daemon."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        request.settimeout(IDLE_TIMEOUT_S)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _IPv6ThreadingWSGIServer(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes arrive every few seconds; they are not worth a log line each."""


class HealthServer:
    def __init__(
        self, address: tuple[str, int], metrics: Metrics, *, healthy: Probe, ready: Probe
    ) -> None:
        self._metrics_app = make_wsgi_app(metrics.registry)
        self._healthy = healthy
        self._ready = ready
        server_class = _IPv6ThreadingWSGIServer if ":" in address[0] else _ThreadingWSGIServer
        self._server = make_server(
            *address, self._app, server_class=server_class, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return (str(host), int(port))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            metrics_page: Iterable[bytes] = self._metrics_app(environ, start_response)
            return metrics_page
        probe = {"/healthz": self._healthy, "/readyz": self._ready}.get(path)
        if probe is None:
            return _respond(start_response, "404 Not Found", {"error": "not found"})
        try:
            ok, body = probe()
        except Exception as exc:  # a probe that breaks says "not ready", it never hangs up
            ok, body = False, {"error": type(exc).__name__}
        return _respond(start_response, "200 OK" if ok else "503 Service Unavailable", body)


def _respond(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body, indent=2).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]
