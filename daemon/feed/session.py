"""One market-data connection, from open to the reason it ended: open, authorize with the md
token, subscribe each contract, then read quotes, sending the client's heartbeat and calling
back every FEED_TICK_S (writes, token and lease checks). It ends when the callback gives a
reason, or raises: `Unauthorized` (the token refused), `QuotaTaken` (another platform took the
market-data quota), `Disconnected` (a close, an error, a dead socket)."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from websockets.exceptions import WebSocketException

from daemon.constants import FEED_CLIENT_HEARTBEAT_S, FEED_OPEN_TIMEOUT_S, FEED_TICK_S
from daemon.feed import protocol
from daemon.feed.quotes import QuoteBook
from daemon.feed.websocket import WebSocket

log = structlog.get_logger("daemon.feed")

QUOTA_REASON = "DeviceQuotaReached"
AUTHORIZE_ID = 0
MAX_FRAME_BYTES = 4 * 1024 * 1024


class Disconnected(Exception):
    """The socket closed or failed; the feed reconnects."""


class Unauthorized(Disconnected):
    """`authorize` answered other than 200: the md token is not (or no longer) accepted."""


class QuotaTaken(Exception):
    """`shutdown` with DeviceQuotaReached: another platform took the quota. Taking it back in a
    loop would log the trader out of theirs; the feed stops until told to resume."""


@dataclass
class Session:
    url: str
    token: str
    contracts: Sequence[tuple[str, int]]  # (name subscribed, contract id)
    book: QuoteBook
    on_quotes: Callable[[list[int]], None]  # contracts whose price changed
    source_address: str | None = None
    ssl_context: ssl.SSLContext | None = None  # wss: the system's CAs when None
    monotonic: Callable[[], float] = time.monotonic
    refused: dict[str, str] = field(default_factory=dict)  # a subscription Tradovate refused

    def run(self, tick: Callable[[], str | None]) -> str:
        """Connect and serve until `tick` (called once subscribed, then every FEED_TICK_S
        between messages) names a reason to stop: that reason."""
        try:
            with WebSocket(
                self.url,
                open_timeout_s=FEED_OPEN_TIMEOUT_S,
                max_size=MAX_FRAME_BYTES,
                source_address=self.source_address,
                ssl_context=self.ssl_context,
            ) as socket:
                return self._serve(socket, tick)
        except (WebSocketException, OSError) as error:
            raise Disconnected(f"{type(error).__name__}: {str(error)[:120]}") from None
        except protocol.FrameError as error:
            raise Disconnected(str(error)) from None

    def _serve(self, socket: WebSocket, tick: Callable[[], str | None]) -> str:
        deadline = self.monotonic() + FEED_OPEN_TIMEOUT_S
        while self._next(socket, deadline).kind != protocol.OPEN:
            pass
        socket.send(protocol.authorize(AUTHORIZE_ID, self.token))
        while not self._answered(self._next(socket, deadline), AUTHORIZE_ID):
            pass
        for number, (name, _) in enumerate(self.contracts, start=1):
            socket.send(protocol.request("md/subscribeQuote", number, {"symbol": name}))
        beat_at = self.monotonic() + FEED_CLIENT_HEARTBEAT_S
        tick_at = 0.0
        while True:
            now = self.monotonic()
            if now >= tick_at:
                reason = tick()
                if reason is not None:
                    return reason
                tick_at = now + FEED_TICK_S
            if now >= beat_at:
                socket.send(protocol.CLIENT_HEARTBEAT)
                beat_at = now + FEED_CLIENT_HEARTBEAT_S
            text = socket.recv(min(tick_at, beat_at) - now)
            if text is not None:
                self._handle(protocol.parse(text))

    def _next(self, socket: WebSocket, deadline: float) -> protocol.Frame:
        """The next frame before `deadline`, its quotes handled on the way."""
        text = socket.recv(deadline - self.monotonic())
        if text is None:
            raise Disconnected("no answer in time while opening")
        frame = protocol.parse(text)
        self._handle(frame)
        return frame

    def _answered(self, frame: protocol.Frame, request_id: int) -> bool:
        for message in frame.messages:
            if type(message) is dict and message.get("i") == request_id:
                if message.get("s") != 200:
                    raise Unauthorized(f"authorize answered {message.get('s')}")
                return True
        return False

    def _handle(self, frame: protocol.Frame) -> None:
        if frame.kind == protocol.CLOSE:
            raise Disconnected(f"closed by the server: {frame.close_reason[:120]}")
        changed: list[int] = []
        for message in frame.messages:
            if type(message) is not dict:
                continue
            event = message.get("e")
            data = message.get("d")
            if event == "md" and type(data) is dict:
                quotes = data.get("quotes")
                if type(quotes) is list:
                    changed += self.book.merge(quotes)
            elif event == "shutdown":
                reason = data.get("reasonCode") if isinstance(data, dict) else None
                if reason == QUOTA_REASON:
                    raise QuotaTaken(QUOTA_REASON)
                raise Disconnected(f"shutdown: {str(reason)[:60]}")
            elif isinstance(message.get("i"), int) and message.get("s") not in (200, None):
                number = int(message["i"])
                if 1 <= number <= len(self.contracts):
                    name = self.contracts[number - 1][0]
                    self.refused[name] = f"{message.get('s')}: {str(data)[:80]}"
                    log.warning("feed.subscription_refused", symbol=name, status=message.get("s"))
        if changed:
            self.on_quotes(changed)
