"""The simulator over HTTP on 127.0.0.1: a threading server that takes a client's hang-up
quietly, and a handler that hands each request to the simulator's `answer`."""

from __future__ import annotations

import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from daemon.sim.tradovate.faults import Drip, Hang, Reset

if TYPE_CHECKING:
    from daemon.sim.tradovate.simulator import FakeTradovate


class QuietHTTPServer(ThreadingHTTPServer):
    """A client hanging up (a daemon killed, a refused oversized answer) is no error here."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def handler_class(fake: FakeTradovate) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: without TCP_NODELAY every answer
        # waits out the client's 40 ms delayed ACK, which is not Tradovate's latency.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the daemon's own logs tell the story."""

        def _serve(self, method: str) -> None:
            with fake._lock:
                fake.seen.received += 1
                fake.seen.arrivals.append((time.monotonic(), self.path.split("?")[0]))
            if fake.latency_s:
                time.sleep(fake.latency_s)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = _body(raw, self.headers.get("Content-Type", ""))
            if self.path.startswith("/authorize"):
                with fake._lock:
                    fake.seen.authorize_headers.append(dict(self.headers))
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
            status, answer = fake.answer(method, self.path, body, token, self.client_address[0])
            if isinstance(answer, Hang):
                time.sleep(answer.seconds)
                status, answer = 504, {"errorText": "late"}
            if isinstance(answer, Reset):
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if isinstance(answer, Drip):
                self._drip(status, answer)
                return
            if isinstance(answer, bytes):
                payload, content_type = answer, "text/html"
            else:
                payload, content_type = json.dumps(answer).encode(), "application/json"
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting: what it should do

        def _drip(self, status: int, answer: Drip) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                for byte in answer.body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(answer.every_s)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


def _body(raw: bytes, content_type: str) -> Any:
    """A JSON body, or a form's fields (the TradingView route), or None."""
    if not raw:
        return None
    if content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    try:
        return json.loads(raw)
    except ValueError:
        return None
