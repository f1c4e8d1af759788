"""Tradovate's market-data socket, simulated on 127.0.0.1 (`ws://.../v1/websocket`), and the
contract catalogue behind `/contract/find`, `/contract/suggest` and `/contractMaturity/item`.

The socket speaks Tradovate's frames (`daemon.feed.protocol`): `o` on open, `h` every 2.5 s,
`a[...]` messages, `c[...]` before a close. A client must authorize first, with a bare live token
of this simulator (a quoted, wrong or expired one: 401, then the socket closes), and send `[]`
within HEARTBEAT_GRACE_S of its last frame, or it is dropped. Subscribed contracts get a full
quote at once, then quotes with some entries left out (and any field of an entry) at the
configured rate. Tests close every socket from the server side, take the quota away
(`DeviceQuotaReached`), and read how many sockets were ever open at once."""

from __future__ import annotations

import itertools
import json
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.sync.server import Server, ServerConnection, serve

from daemon.constants import FRONT_MONTH_ROLL_S
from daemon.feed import protocol
from daemon.sim.tradovate.rules import CONTRACT_FIND_PATH, CONTRACT_SUGGEST_PATH, MATURITY_PATH

HEARTBEAT_S = 2.5  # the server's `h`
HEARTBEAT_GRACE_S = 5.0  # a client silent this long is dropped (Tradovate: "about 2.5 s")
ROOTS = {"MNQ": 21_000.0, "MES": 6_000.0, "ES": 6_000.0, "NQ": 21_000.0, "M2K": 2_300.0}
QUARTER_MONTHS = ((3, "H"), (6, "M"), (9, "U"), (12, "Z"))
TICK = 0.25
CONTRACT_PATHS = (CONTRACT_FIND_PATH, CONTRACT_SUGGEST_PATH, MATURITY_PATH)


@dataclass(frozen=True)
class SimContract:
    id: int
    name: str
    maturity_id: int
    expires_at: float


def third_friday(year: int, month: int) -> datetime:
    first = datetime(year, month, 1, 13, 30, tzinfo=UTC)  # 9:30 New York, near enough
    fridays = [
        first + timedelta(days=d) for d in range(31) if (first + timedelta(days=d)).weekday() == 4
    ]
    return fridays[2]


def catalogue(now: float) -> dict[str, SimContract]:
    """Each root's next four quarterly months, by name (`MNQZ6`), from `now`."""
    found: dict[str, SimContract] = {}
    ids = itertools.count(3_000_001)
    today = datetime.fromtimestamp(now, UTC)
    for root in ROOTS:
        year, months = today.year, list[tuple[str, float]]()
        while len(months) < 4:
            for month, code in QUARTER_MONTHS:
                expiry = third_friday(year, month)
                if expiry.timestamp() > now and len(months) < 4:
                    months.append((f"{root}{code}{year % 10}", expiry.timestamp()))
            year += 1
        for name, expires_at in months:
            number = next(ids)
            found[name] = SimContract(number, name, number + 1_000_000, expires_at)
    return found


def iso_ms(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class MarketData:
    def __init__(
        self,
        token_user: Callable[[str], str | None],
        *,
        quotes_per_s: float = 20.0,
        partial: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`token_user`: whose live token this is (None: not one this simulator would take)."""
        self._token_user = token_user
        self.quotes_per_s = quotes_per_s
        self.partial = partial  # quotes leave entries out (else each carries them all)
        self.clock = clock
        self.contracts = catalogue(clock())
        self._lock = threading.Lock()
        self._sockets: set[ServerConnection] = set()
        self.most_open = 0  # the most sockets ever open at once
        self.opened_beside: list[str] = []  # each socket opened while another was: when, whose
        self.connections = 0
        self.authorized: list[str] = []  # whose token authorized each socket
        self.authorized_tokens: list[str] = []  # ... and which token
        self.refused_tokens = 0
        self.quota_taken_from: str | None = None
        self.sent: dict[float, float] = {}  # bench: a quote's Last -> perf_counter at send
        self.record_sends = False
        self._prices = {c.id: ROOTS[_root(c.name)] for c in self.contracts.values()}
        self._volume = dict.fromkeys(self._prices, 1_000)
        self._server: Server | None = None
        self._tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "wss" if self._tls else "ws"
        return f"{scheme}://127.0.0.1:{self._server.socket.getsockname()[1]}/v1/websocket"

    def start(self, tls: ssl.SSLContext | None = None) -> MarketData:
        """Serve on 127.0.0.1; with `tls`, as Tradovate does (`wss://`)."""
        self._tls = tls
        self._server = serve(
            self._serve, "127.0.0.1", 0, compression=None, ping_interval=None, ssl=tls
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        self.close_all("the simulator stops")

    # -- control ---------------------------------------------------------------------------

    def close_all(self, reason: str = "closed by the server") -> int:
        """Close every socket from the server's side (`c` frame, then the close)."""
        with self._lock:
            sockets = list(self._sockets)
        for socket in sockets:
            _close(socket, f"c{json.dumps([1000, reason])}")
        return len(sockets)

    def take_quota(self) -> int:
        """Another platform takes the market-data quota: `shutdown` DeviceQuotaReached."""
        event = {"e": "shutdown", "d": {"reasonCode": "DeviceQuotaReached"}}
        with self._lock:
            sockets = list(self._sockets)
        for socket in sockets:
            _close(socket, "a" + json.dumps([event]))
        return len(sockets)

    # -- a connection ----------------------------------------------------------------------

    @property
    def open_now(self) -> int:
        """Sockets open now. One whose close the server has received is over, though the
        thread serving it may not have run since: a client that waited for the server's close
        before connecting again was counted twice about once in 20 reconnects."""
        with self._lock:
            return len(self._open())

    def _open(self) -> list[ServerConnection]:
        """The sockets whose close the server has not received (the caller holds the lock)."""
        return [socket for socket in self._sockets if socket.state is State.OPEN]

    def _serve(self, socket: ServerConnection) -> None:
        with self._lock:
            others = [s.remote_address for s in self._open()]
            self._sockets.add(socket)
            self.connections += 1
            self.most_open = max(self.most_open, len(others) + 1)
            if others:
                self.opened_beside.append(f"{time.time():.3f} {socket.remote_address} {others}")
        try:
            _Conversation(self, socket).run()
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._sockets.discard(socket)

    def quote(self, contract: int, *, full: bool, rng: random.Random) -> dict[str, Any]:
        with self._lock:
            price = self._prices[contract] + rng.choice((-TICK, 0.0, TICK))
            if self.record_sends:
                price = self._prices[contract] + TICK  # every Last distinct: bench timing
            self._prices[contract] = price
            self._volume[contract] += rng.randint(1, 5)
            volume = self._volume[contract]
        entries: dict[str, Any] = {
            "Bid": {"price": price - TICK, "size": rng.randint(1, 40)},
            "Offer": {"price": price + TICK, "size": rng.randint(1, 40)},
            "Trade": {"price": price, "size": rng.randint(1, 5)},
            "TotalTradeVolume": {"size": volume},
            "HighPrice": {"price": price + 40 * TICK},
            "LowPrice": {"price": price - 40 * TICK},
        }
        if not full and self.partial:
            kept = set(rng.sample(sorted(entries), rng.randint(1, len(entries))))
            if kept & {"Bid", "Offer"}:  # the book moves as a whole: never a crossed one
                kept |= {"Bid", "Offer"}
            entries = {name: entries[name] for name in sorted(kept)}
            if "Bid" in entries and rng.random() < 0.3:
                # A field left out: the size. A price left out means an unchanged one, and
                # this book's prices all moved (the demo showed a crossed book from that).
                entries["Bid"] = {"price": entries["Bid"]["price"]}
        return {"timestamp": iso_ms(self.clock()), "contractId": contract, "entries": entries}

    def library_answer(self, path: str, query: dict[str, str], token: str) -> tuple[int, Any]:
        """The contract library: by name, by text (a root's months), a maturity by id."""
        if self.user_of(token) is None:
            return 401, {"errorText": "Access is denied"}
        listed = self.contracts.values()
        if path == CONTRACT_FIND_PATH:
            found = self.contracts.get(query.get("name", ""))
            return (404, {"errorText": "Not found"}) if found is None else (200, _contract(found))
        if path == CONTRACT_SUGGEST_PATH:
            text, most = query.get("t", ""), int(query.get("l", "10") or 10)
            return 200, [_contract(c) for c in listed if c.name.startswith(text)][:most]
        maturity = next((c for c in listed if str(c.maturity_id) == query.get("id")), None)
        if maturity is None:
            return 404, {"errorText": "Not found"}
        expires = iso_ms(maturity.expires_at)
        return 200, {"id": maturity.maturity_id, "expirationDate": expires, "isFront": False}

    def front_month(self, root: str) -> str:
        """The month the feed resolves `root` to now (the first listed that expires more than
        FRONT_MONTH_ROLL_S from now): tests name contracts by it, whatever today's date."""
        now = self.clock()
        return next(
            c.name
            for c in self.contracts.values()
            if _root(c.name) == root and c.expires_at - FRONT_MONTH_ROLL_S > now
        )

    def by_symbol(self, symbol: object) -> SimContract | None:
        if isinstance(symbol, int):
            return next((c for c in self.contracts.values() if c.id == symbol), None)
        return self.contracts.get(str(symbol))

    def user_of(self, token: str) -> str | None:
        return self._token_user(token)


class _Conversation:
    def __init__(self, market: MarketData, socket: ServerConnection) -> None:
        self.market, self.socket = market, socket
        self.authorized = False
        self.subscribed: list[int] = []
        self.rng = random.Random()

    def run(self) -> None:
        market, socket = self.market, self.socket
        socket.send(protocol.OPEN)
        heard_at = beat_at = quote_at = time.monotonic()
        while True:
            now = time.monotonic()
            if now - heard_at > HEARTBEAT_GRACE_S:
                _close(socket, f"c{json.dumps([1000, 'no heartbeat'])}")
                return
            if now >= beat_at:
                socket.send(protocol.HEARTBEAT)
                beat_at = now + HEARTBEAT_S
            interval = 1.0 / max(market.quotes_per_s, 0.001)
            if self.subscribed and now >= quote_at:
                due = min(int((now - quote_at) / interval) + 1, 50)
                for _ in range(due):
                    self._send_quote(self.rng.choice(self.subscribed), full=False)
                quote_at += due * interval
                if quote_at < now - 1.0:
                    quote_at = now  # a stall is not made up in a burst
            wait = min(beat_at, quote_at if self.subscribed else beat_at) - time.monotonic()
            try:
                text = socket.recv(timeout=max(0.0, min(wait, 0.25)))
            except TimeoutError:
                continue
            heard_at = time.monotonic()
            if not self._answer(text if isinstance(text, str) else text.decode()):
                return

    def _send_quote(self, contract: int, *, full: bool) -> None:
        quote = self.market.quote(contract, full=full, rng=self.rng)
        frame = "a" + json.dumps([{"e": "md", "d": {"quotes": [quote]}}])
        if self.market.record_sends and "Trade" in quote["entries"]:
            self.market.sent[quote["entries"]["Trade"]["price"]] = time.perf_counter()
        self.socket.send(frame)

    def _answer(self, text: str) -> bool:
        """Answer one request; False once the socket is to close."""
        if text == protocol.CLIENT_HEARTBEAT:
            return True
        endpoint, _, rest = text.partition("\n")
        number_text, _, rest = rest.partition("\n")
        _query, _, body = rest.partition("\n")
        number = int(number_text) if number_text.isdigit() else -1
        if endpoint == "authorize":
            user = None if body.startswith('"') else self.market.user_of(body)
            if user is None:
                with self.market._lock:
                    self.market.refused_tokens += 1
                self._reply(number, 401, "Access is denied")
                _close(self.socket, f"c{json.dumps([1008, 'unauthorized'])}")
                return False
            self.authorized = True
            with self.market._lock:
                self.market.authorized.append(user)
                self.market.authorized_tokens.append(body)
            self._reply(number, 200)
            return True
        if not self.authorized:
            self._reply(number, 401, "Access is denied")
            return False
        try:
            fields = json.loads(body) if body else {}
        except ValueError:
            fields = {}
        found = self.market.by_symbol(fields.get("symbol") if isinstance(fields, dict) else None)
        if endpoint in ("md/subscribeQuote", "md/unsubscribeQuote") and found is None:
            self._reply(number, 404, "Unknown symbol")
            return True
        if endpoint == "md/subscribeQuote" and found is not None:
            self._reply(number, 200, {"mode": "quotes"})
            if found.id not in self.subscribed:
                self.subscribed.append(found.id)
            self._send_quote(found.id, full=True)  # what Tradovate sends first: all of it
            return True
        if endpoint == "md/unsubscribeQuote" and found is not None:
            self.subscribed = [c for c in self.subscribed if c != found.id]
            self._reply(number, 200)
            return True
        self._reply(number, 404, f"Not found: {endpoint}")
        return True

    def _reply(self, number: int, status: int, data: object = None) -> None:
        message: dict[str, Any] = {"s": status, "i": number}
        if data is not None:
            message["d"] = data
        self.socket.send("a" + json.dumps([message]))


def _close(socket: ServerConnection, last: str) -> None:
    try:
        socket.send(last)
        socket.close()
    except (ConnectionClosed, OSError, RuntimeError):
        return


def _contract(contract: SimContract) -> dict[str, Any]:
    return {"id": contract.id, "name": contract.name, "contractMaturityId": contract.maturity_id}


def _root(name: str) -> str:
    return name[:-2]
