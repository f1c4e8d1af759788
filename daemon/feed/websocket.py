"""One websocket read in the caller's own thread: websockets' Sans-I/O protocol (the handshake,
framing, masking, pings answered, the closing handshake) over a socket this module opens and
reads only when the caller asks.

websockets' sync client reads in a thread of its own and hands each message across with locks:
at 1,000 quotes a second that hand-off cost the daemon as much CPU as the rest of the feed
(docs/performance.md, row 10). Here a message costs a poll and a read."""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections import deque
from types import TracebackType

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.frames import Frame, Opcode
from websockets.http11 import USER_AGENT, Response
from websockets.protocol import State
from websockets.uri import parse_uri

READ_BYTES = 65_536
SEND_TIMEOUT_S = 5.0  # a send that cannot leave in this long fails the connection
CLOSE_TIMEOUT_S = 1.0  # our close waits this long for the server's answer, then drops the socket


class WebSocket:
    """A client websocket of text messages. Each failure raises: `websockets.exceptions.
    ConnectionClosed` (a close, the end of the stream), `InvalidHandshake` (no websocket
    there), OSError or TimeoutError (the network, TLS, no answer while opening)."""

    def __init__(
        self,
        url: str,
        *,
        open_timeout_s: float,
        max_size: int,
        source_address: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        deadline = time.monotonic() + open_timeout_s
        uri = parse_uri(url)
        self._protocol = ClientProtocol(uri, max_size=max_size)
        self._messages: deque[str] = deque()
        self._fragments: list[bytes | bytearray | memoryview] = []
        self._answered = False
        self._ended: ConnectionClosed | None = None
        sock = socket.create_connection(
            (uri.host, uri.port),
            timeout=open_timeout_s,
            source_address=(source_address, 0) if source_address else None,
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if uri.secure:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                context = ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=uri.host)
            sock.setblocking(False)  # reads wait in `poll`, so a read is one system call
            self._socket = sock
            self._tls = sock if isinstance(sock, ssl.SSLSocket) else None
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)
            request = self._protocol.connect()
            request.headers["User-Agent"] = USER_AGENT
            self._protocol.send_request(request)
            self._flush()
            while not self._answered:
                if self._ended is not None:
                    raise self._ended
                if not self._read(deadline - time.monotonic()) and time.monotonic() >= deadline:
                    raise TimeoutError("no websocket handshake answer in time")
        except BaseException:
            sock.close()
            raise

    def send(self, text: str) -> None:
        """Sent, unless the server has closed: then nothing is, and `recv` still gives what came
        before the close (a quota's shutdown comes just before one), then raises."""
        if self._ended is not None:
            return
        self._protocol.send_text(text.encode())
        self._flush()

    def recv(self, timeout_s: float) -> str | None:
        """The next text message, or None when none comes within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self._messages:
            if self._ended is not None:
                raise self._ended
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._read(remaining)
        return self._messages.popleft()

    def _read(self, timeout_s: float) -> bool:
        """Wait at most `timeout_s` for data and take it in: False if none came. A close, or the
        end of the stream, ends the socket (`recv` raises ConnectionClosed once the
        messages before it are read); a failed handshake raises its own error."""
        if timeout_s <= 0 or self._ended is not None:
            return False
        pending = self._tls is not None and self._tls.pending()  # TLS holds decrypted bytes
        if not pending and not self._poll.poll(timeout_s * 1000):
            return False
        try:
            data = self._socket.recv(READ_BYTES)
        except (BlockingIOError, ssl.SSLWantReadError):
            return False  # a wake-up with nothing to read (TLS bookkeeping)
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        for event in self._protocol.events_received():
            if isinstance(event, Response):
                self._answered = True
            elif isinstance(event, Frame):
                self._take(event)
        if self._protocol.handshake_exc is not None:
            raise self._protocol.handshake_exc
        ending = self._protocol.close_rcvd is not None or self._protocol.state is State.CLOSED
        try:
            self._flush()  # pongs, and our half of a closing handshake
        except OSError:
            if not ending:
                raise
        if ending and self._ended is None:
            # The messages that came before the close are read first.
            protocol = self._protocol
            self._ended = ConnectionClosed(
                protocol.close_rcvd, protocol.close_sent, protocol.close_rcvd_then_sent
            )
        return True

    def _take(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT and frame.fin:  # a whole message in one frame: most
            self._messages.append(str(frame.data, "utf-8", "replace"))
        elif frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            self._fragments.append(frame.data)
            if frame.fin:
                self._messages.append(b"".join(self._fragments).decode("utf-8", "replace"))
                self._fragments.clear()

    def _flush(self) -> None:
        outgoing = self._protocol.data_to_send()
        if not outgoing:
            return
        self._socket.settimeout(SEND_TIMEOUT_S)
        try:
            for data in outgoing:
                if data:
                    self._socket.sendall(data)
                else:  # the protocol is done writing: half-close
                    self._socket.shutdown(socket.SHUT_WR)
        finally:
            self._socket.setblocking(False)

    def close(self) -> None:
        """Our close frame, the server's answer awaited at most CLOSE_TIMEOUT_S, then the
        socket is closed whatever came."""
        try:
            if self._protocol.state is State.OPEN:
                self._protocol.send_close(1000)
                self._flush()
                deadline = time.monotonic() + CLOSE_TIMEOUT_S
                while self._ended is None and time.monotonic() < deadline:
                    self._read(deadline - time.monotonic())
        except (WebSocketException, OSError):
            pass  # the close is best effort: the socket goes anyway
        finally:
            self._socket.close()

    def __enter__(self) -> WebSocket:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
