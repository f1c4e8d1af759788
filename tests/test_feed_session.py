"""The market-data feed's parts against the simulated socket: frames, the merging of partial
quotes, one session (authorize, subscribe, heartbeat, every way it ends) and the front months."""

from __future__ import annotations

import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import fakeredis
import pytest
from structlog.testing import capture_logs
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.utils import accept_key

from daemon.config import PriceSettings
from daemon.constants import FEED_LEASE_MARGIN_S, FEED_LEASE_TTL_S, FEED_OPEN_TIMEOUT_S
from daemon.feed import protocol
from daemon.feed.contracts import Subscription, front_month, is_contract_name, resolve
from daemon.feed.quotes import QuoteBook, timestamp_ms
from daemon.feed.session import Disconnected, QuotaTaken, Session, Unauthorized
from daemon.feed.supervisor import PriceFeed
from daemon.feed.writer import FeedWriter, Live
from daemon.metrics import Metrics
from daemon.sim.environment import wait_for
from daemon.sim.redis_server import TlsFiles
from daemon.sim.tradovate import FakeTradovate
from daemon.sim.tradovate.market import HEARTBEAT_GRACE_S, MarketData
from daemon.store.feed import FeedLease, holder
from daemon.tradovate import TradovateClient
from daemon.tradovate.contracts import Contract, ContractLibrary
from daemon.views.status import feed_words
from tests.helpers import settings_for, user

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake() -> Iterator[FakeTradovate]:
    with FakeTradovate([user("APEX_1")]) as running:
        running.market.quotes_per_s = 200
        yield running


def grant_of(fake: FakeTradovate) -> tuple[str, str]:
    """(access token, md token) of a fresh login."""
    settings = settings_for(fake)
    client = TradovateClient(settings.tradovate)
    grant = client.login(settings.logins[0])
    assert grant.md_access_token is not None
    return grant.access_token, grant.md_access_token


def session(fake: FakeTradovate, token: str, names: tuple[str, ...] = ()) -> Session:
    """A session of `names`, by default the front month of MNQ (whatever the date)."""
    names = names or (fake.market.front_month("MNQ"),)
    contracts = [(name, fake.market.contracts[name].id) for name in names]
    return Session(fake.market.url, token, contracts, QuoteBook(), on_quotes=lambda changed: None)


def until(seconds: float) -> Callable[[], str | None]:
    deadline = time.monotonic() + seconds
    return lambda: "enough" if time.monotonic() > deadline else None


def test_frames_parse_as_tradovate_sends_them_and_garbage_is_named_briefly() -> None:
    assert protocol.parse("o").kind == protocol.OPEN
    assert protocol.parse("h").kind == protocol.HEARTBEAT
    frame = protocol.parse('a[{"s":200,"i":0},{"e":"md","d":{}}]')
    assert frame.messages == ({"s": 200, "i": 0}, {"e": "md", "d": {}})
    assert protocol.parse('c[1000,"bye"]').close_reason == "1000 bye"
    with pytest.raises(protocol.FrameError, match="unknown frame 'x"):
        protocol.parse("x" * 500)
    with pytest.raises(protocol.FrameError, match="not JSON"):
        protocol.parse("a[{")
    assert protocol.authorize(0, "tok") == "authorize\n0\n\ntok"
    assert protocol.request("md/subscribeQuote", 3, {"symbol": "MNQZ5"}) == (
        'md/subscribeQuote\n3\n\n{"symbol": "MNQZ5"}'
    )


def test_partial_quotes_merge_per_contract_and_only_a_whole_price_is_written() -> None:
    book = QuoteBook()
    at = "2026-12-07T14:00:00.250Z"
    first = {"timestamp": at, "contractId": 7, "entries": {"Bid": {"price": 10.0, "size": 3}}}
    assert book.merge([first]) == []  # Bid alone: not a price the reference's readers take
    whole = {
        "Trade": {"price": 10.25},
        "Offer": {"price": 10.5},
        "TotalTradeVolume": {"size": 900},
        "HighPrice": {"price": 11.0},
        "LowPrice": {"price": 9.0},
    }
    assert book.merge([{"timestamp": at, "contractId": 7, "entries": whole}]) == [7]
    later = "2026-12-07T14:00:01.000Z"
    update = {"Bid": {"size": 9}, "Trade": {"price": 10.5, "size": 1}}  # a Bid without price
    assert book.merge([{"timestamp": later, "contractId": 7, "entries": update}]) == [7]
    assert book.price(7) == {
        "Last": 10.5,
        "Bid": 10.0,
        "Ask": 10.5,
        "Volume": 900,
        "High": 11.0,
        "Low": 9.0,
        "Timestamp": timestamp_ms(later),
    }
    assert timestamp_ms(later) == int(
        datetime(2026, 12, 7, 14, 0, 1, tzinfo=UTC).timestamp() * 1000
    )
    assert book.legacy(7, "MNQZ6") == {"LAST": 10.5, "TIMESTAMP": later, "INSTRUMENT": "MNQZ6"}
    assert book.merge([{"contractId": 8, "entries": whole}]) == []  # no time: not a quote


def test_a_written_price_goes_under_each_name_and_is_counted_once_a_second() -> None:
    """Two symbols naming one contract (`MNQ` and `MNQZ6`): one price, both keys, each symbol
    counted. The count reaches `orca_price_quotes_total` at `count` (each second, and when the
    connection ends), not at each quote, and nothing counted is lost or counted twice."""
    client = fakeredis.FakeRedis()
    metrics = Metrics()
    writer = FeedWriter(client, metrics, PriceSettings(("MNQ", "MNQZ6")), "host:1:ab", time.time)
    contract = Contract(7, "MNQZ6", 70)
    live = Live("md", [Subscription("MNQ", contract), Subscription("MNQZ6", contract)])
    whole = {name: {"price": 10.0, "size": 1} for name in ("Bid", "Offer", "Trade")}
    whole |= {"TotalTradeVolume": {"size": 5}, "HighPrice": {"price": 11}, "LowPrice": {"price": 9}}
    for at in ("2026-12-07T14:00:00.250Z", "2026-12-07T14:00:00.500Z"):
        writer.prices(live, live.book.merge([{"timestamp": at, "contractId": 7, "entries": whole}]))
    writer.settle()
    assert json.loads(client.get("price:MNQ:latest") or "") == live.book.price(7)
    assert client.get("price:MNQZ6:latest") == client.get("price:MNQ:latest")

    def counted(symbol: str) -> float:
        return (
            metrics.registry.get_sample_value("orca_price_quotes_total", {"symbol": symbol}) or 0.0
        )

    assert (counted("MNQ"), counted("MNQZ6")) == (0, 0)
    writer.count(live)
    writer.count(live)
    assert (counted("MNQ"), counted("MNQZ6")) == (2, 2)
    writer.close()


def test_the_simulators_partial_quotes_never_merge_into_a_crossed_book() -> None:
    """Entries and fields left out, as Tradovate leaves them out, still merge into a book
    whose bid is below its ask (a price left out means an unchanged one)."""
    market = MarketData(lambda token: None)
    contract = market.contracts[market.front_month("MNQ")].id
    book, rng = QuoteBook(), random.Random(3)
    crossed = 0
    for _ in range(2_000):
        if book.merge([market.quote(contract, full=False, rng=rng)]):
            merged = book.price(contract)
            crossed += merged["Bid"] >= merged["Ask"]
    assert book.complete(contract)
    assert crossed == 0


def test_a_session_authorizes_with_the_md_token_and_writes_merged_quotes() -> None:
    with FakeTradovate([user("APEX_1")]) as fake:
        fake.market.quotes_per_s = 200
        _, md_token = grant_of(fake)
        changed: list[list[int]] = []
        names = (fake.market.front_month("MNQ"), fake.market.front_month("ES"))
        running = session(fake, md_token, names)
        running.on_quotes = changed.append
        assert running.run(until(1.0)) == "enough"
        ids = {fake.market.contracts[n].id for n in names}
        assert set().union(*changed) == ids
        assert all(running.book.complete(i) for i in ids)
        assert fake.market.authorized == ["APEX_1"]
        wait_for(lambda: fake.market.open_now == 0, timeout=3, what="the socket closed")


@pytest.mark.parametrize("kind", ["quoted", "wrong", "expired"])
def test_a_refused_token_is_unauthorized_and_the_socket_closes(kind: str) -> None:
    with FakeTradovate([user("APEX_1")], token_lifetime_s=2) as fake:
        _, md_token = grant_of(fake)
        token = {
            "quoted": json.dumps(md_token),
            "wrong": md_token[:-4] + "AAAA",
            "expired": md_token,
        }[kind]
        if kind == "expired":
            time.sleep(2.2)  # the token's own life (2 s) runs out
        with pytest.raises(Unauthorized, match="authorize answered 401"):
            session(fake, token).run(until(5))
        assert fake.market.refused_tokens == 1


def test_closed_by_the_server_or_the_quota_taken_ends_the_session_for_its_reason(
    fake: FakeTradovate,
) -> None:
    """The server acts from a thread of its own, as Tradovate would: the session's one thread
    answers the closing handshake when it next reads."""
    _, md_token = grant_of(fake)

    def on_the_fourth_tick(act: Callable[[], int]) -> Callable[[], str | None]:
        calls = iter(range(10_000))

        def tick() -> str | None:
            if next(calls) == 4:
                threading.Thread(target=act).start()
            return None

        return tick

    def maintenance() -> int:
        return fake.market.close_all("maintenance")

    started = time.monotonic()
    with pytest.raises(Disconnected, match="closed by the server: 1000 maintenance"):
        session(fake, md_token).run(on_the_fourth_tick(maintenance))
    with pytest.raises(QuotaTaken):
        session(fake, md_token).run(on_the_fourth_tick(fake.market.take_quota))
    assert time.monotonic() - started < 5  # each closing handshake was answered at once
    wait_for(lambda: fake.market.open_now == 0, what="the simulator to see both sockets closed")


def test_a_client_that_stops_its_heartbeat_is_dropped(fake: FakeTradovate) -> None:
    _, md_token = grant_of(fake)
    with connect(fake.market.url, compression=None) as socket:
        assert socket.recv(timeout=2) == "o"
        socket.send(protocol.authorize(0, md_token))
        started = time.monotonic()
        frames = list(_until_closed(socket, HEARTBEAT_GRACE_S + 3))
        assert f"c{json.dumps([1000, 'no heartbeat'])}" in frames
    assert time.monotonic() - started >= HEARTBEAT_GRACE_S - 0.5


def _until_closed(socket: ClientConnection, within_s: float) -> Iterator[str]:
    """Every frame the server sends until it closes the socket."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            yield str(socket.recv(timeout=deadline - time.monotonic()))
        except ConnectionClosed:
            return
    raise AssertionError("the server kept the socket open")


def test_sessions_one_after_another_are_never_open_at_once_and_two_at_once_are_seen(
    fake: FakeTradovate,
) -> None:
    """The soak's "never two sockets", measured right: a session that ends has had its close
    answered, so the simulator no longer counts it, whichever thread runs first. Counted by
    the threads serving them, 100 reconnects gave 2 open at once a few times."""
    _, md_token = grant_of(fake)
    for _ in range(100):  # each ends at its first tick, subscribed: a renewal's reconnect
        assert session(fake, md_token).run(lambda: "renewed") == "renewed"
    assert (fake.market.connections, fake.market.most_open) == (100, 1)
    with connect(fake.market.url, compression=None), connect(fake.market.url, compression=None):
        wait_for(lambda: fake.market.open_now == 2, timeout=3, what="two sockets")
    assert fake.market.most_open == 2
    assert len(fake.market.opened_beside) == 1


def test_a_session_keeps_its_socket_with_heartbeats_longer_than_the_grace(
    fake: FakeTradovate,
) -> None:
    _, md_token = grant_of(fake)
    assert session(fake, md_token).run(until(HEARTBEAT_GRACE_S + 1.5)) == "enough"
    assert fake.market.connections == 1


def test_symbols_resolve_to_contracts_and_roots_to_their_front_month(fake: FakeTradovate) -> None:
    access, _ = grant_of(fake)
    library = ContractLibrary(TradovateClient(settings_for(fake).tradovate))
    later = [name for name in fake.market.contracts if name.startswith("MNQ")][-1]
    found = {s.symbol: s for s in resolve(library, access, [later, "MNQ", "NOPEZ9"], time.time())}
    assert set(found) == {later, "MNQ"}  # an unknown one is named and left out
    assert found[later].contract.id == fake.market.contracts[later].id
    front = fake.market.front_month("MNQ")
    assert front != later
    assert found["MNQ"].contract.name == front
    assert found["MNQ"].names == (front, "MNQ")
    assert found[later].names == (later,)


def test_the_front_month_rolls_7_days_before_expiry() -> None:
    day = 86_400.0
    listed = [Contract(1, "MNQZ6", 11), Contract(2, "MNQH7", 12), Contract(3, "MNQXZ6", 13)]
    expiries = {11: 100 * day, 12: 190 * day, 13: 50 * day}
    assert front_month("MNQ", listed, expiries, 92 * day).name == "MNQZ6"  # type: ignore[union-attr]
    assert front_month("MNQ", listed, expiries, 93.5 * day).name == "MNQH7"  # type: ignore[union-attr]
    assert front_month("MNQ", listed, expiries, 200 * day) is None
    assert is_contract_name("MNQZ5")
    assert is_contract_name("ESH27")
    assert not is_contract_name("MNQ")
    assert not is_contract_name("ES")


def test_a_quota_taken_as_the_socket_opens_is_read_before_the_close_fails_a_send() -> None:
    """Tradovate may end a socket the moment it opens: `o`, the DeviceQuotaReached shutdown and
    the close, all in one read. The client's authorize then goes to a closing socket; that
    must not hide the shutdown, or the feed would take the quota back in a loop (CI saw it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=_answer_then_quota, args=(listener,), daemon=True).start()
    url = f"ws://127.0.0.1:{listener.getsockname()[1]}/v1/websocket"
    with pytest.raises(QuotaTaken):
        Session(url, "md", [("MNQZ6", 1)], QuoteBook(), lambda c: None).run(lambda: None)
    listener.close()


def _answer_then_quota(listener: socket.socket) -> None:
    """The upgrade answered, then `o`, the shutdown and a close frame, in one write."""
    accepted, _ = listener.accept()
    request = b""
    while b"\r\n\r\n" not in request:
        request += accepted.recv(4096)
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = accept_key(key.decode()).encode()
    shutdown = (
        b"a" + json.dumps([{"e": "shutdown", "d": {"reasonCode": "DeviceQuotaReached"}}]).encode()
    )
    frames = b"".join(bytes([0x81, len(text)]) + text for text in (b"o", shutdown))
    closing = bytes([0x88, 2]) + (1000).to_bytes(2, "big")
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    accepted.sendall(answer + b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + frames + closing)
    time.sleep(1)  # the client's close answered by nobody: its close waits, then drops
    accepted.close()


def test_a_port_that_accepts_and_never_answers_ends_the_opening_in_time() -> None:
    """The socket's handshake is never answered: Disconnected within FEED_OPEN_TIMEOUT_S,
    well inside the feed's lease deadline, so no other instance's socket can overlap it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    silent = Session(f"ws://127.0.0.1:{port}/v1/websocket", "t", [], QuoteBook(), lambda c: None)
    started = time.monotonic()
    with pytest.raises(Disconnected):
        silent.run(lambda: None)
    took = time.monotonic() - started
    assert FEED_OPEN_TIMEOUT_S - 0.5 <= took <= FEED_OPEN_TIMEOUT_S + 2
    assert FEED_OPEN_TIMEOUT_S < FEED_LEASE_TTL_S - FEED_LEASE_MARGIN_S
    listener.close()


def test_a_tls_session_verifies_the_server_and_a_stranger_or_a_silent_port_is_named(
    tls_files: TlsFiles,
) -> None:
    """Tradovate's sockets are `wss://`. The session reads quotes through TLS from a server
    its CAs vouch for; a certificate they do not, or a port that never finishes the TLS
    handshake, ends the opening with the reason named and in time."""
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    market = MarketData(lambda token: "APEX_1", quotes_per_s=200).start(tls=server_side)
    try:
        name = market.front_month("MNQ")
        contracts = [(name, market.contracts[name].id)]
        book, changed = QuoteBook(), list[list[int]]()
        trusting = ssl.create_default_context(cafile=str(tls_files.ca_cert))
        secure = Session(market.url, "md", contracts, book, changed.append, ssl_context=trusting)
        assert market.url.startswith("wss://")
        assert secure.run(lambda: "enough" if changed else None) == "enough"
        assert book.complete(contracts[0][1])
        stranger = Session(market.url, "md", contracts, QuoteBook(), lambda c: None)
        with pytest.raises(Disconnected, match="SSLCertVerificationError"):
            stranger.run(lambda: None)
    finally:
        market.stop()
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []  # held open, never answered
    threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True).start()
    url = f"wss://127.0.0.1:{listener.getsockname()[1]}/v1/websocket"
    started = time.monotonic()
    with pytest.raises(Disconnected, match="timed out"):
        Session(url, "md", [], QuoteBook(), lambda c: None, ssl_context=trusting).run(lambda: None)
    assert time.monotonic() - started <= FEED_OPEN_TIMEOUT_S + 2
    listener.close()


def test_no_websocket_at_the_address_is_named(fake: FakeTradovate) -> None:
    """TRADOVATE_MD_URL pointed at an HTTP server that is no websocket: its answer named."""
    url = fake.base_url.replace("http://", "ws://") + "/websocket"
    with pytest.raises(Disconnected, match="InvalidStatus"):
        Session(url, "md", [], QuoteBook(), lambda c: None).run(lambda: None)


def price_feed(stopping: threading.Event, seed: int) -> PriceFeed:
    """A feed on fakeredis, its simulated Tradovate never served (nothing here connects)."""
    settings = settings_for(FakeTradovate([user("APEX_1")]), ORCA_PRICE_SYMBOLS="MNQ")
    client = fakeredis.FakeRedis(decode_responses=True)
    tradovate = TradovateClient(settings.tradovate)
    return PriceFeed(
        settings, client, tradovate, Metrics(), "host:1:abcd", stopping, rng=random.Random(seed)
    )


def test_reconnects_back_off_from_1_s_doubling_to_60_s_each_jittered() -> None:
    feed = price_feed(threading.Event(), seed=7)
    waits = [feed._backoff() for _ in range(9)]
    for wait_s, ceiling in zip(waits, (1, 2, 4, 8, 16, 32, 60, 60, 60), strict=True):
        assert ceiling / 2 <= wait_s <= ceiling
    assert len({round(w, 3) for w in waits[-3:]}) == 3  # jittered: instances do not line up


def test_status_says_where_the_feed_runs_and_how_old_each_symbol_is() -> None:
    now = 1_800_000_000.0
    feed = {
        "instance": "host:1:ab",
        "connected": True,
        "login": "APEX_1",
        "symbols": {
            "MNQ": {"contract": "MNQZ6", "quote_ms": (now - 0.4) * 1000},
            "ESZ6": {"contract": "ESZ6", "quote_ms": None},
        },
    }
    assert feed_words(feed, now) == (
        "price feed: live on host:1:ab, md token of APEX_1; MNQ (MNQZ6) 0.4 s old, "
        "ESZ6 no quote yet"
    )
    stopped = {**feed, "connected": False, "stopped": "DeviceQuotaReached: taken"}
    assert feed_words(stopped, now).startswith(
        "price feed: STOPPED (DeviceQuotaReached: taken; SIGHUP resumes it) on host:1:ab"
    )
    down = {**feed, "connected": False, "error": "Disconnected: refused"}
    assert feed_words(down, now).startswith("price feed: disconnected (Disconnected: refused)")


def test_a_failure_of_its_own_is_logged_and_the_feed_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stopping = threading.Event()
    feed = price_feed(stopping, seed=1)
    turns = iter([RuntimeError("a bug"), 0.0])

    def one_turn() -> float:
        found = next(turns, None)
        if isinstance(found, Exception):
            raise found
        stopping.set()
        return 0.0

    monkeypatch.setattr(feed, "_one_turn", one_turn)
    monkeypatch.setattr(feed, "_backoff", lambda: 0.0)
    with capture_logs() as logs:
        feed.run()
    assert [e for e in logs if e["event"] == "feed.failed"] == [
        {
            "event": "feed.failed",
            "error": "RuntimeError",
            "instance": "host:1:abcd",
            "log_level": "error",
        }
    ]
    assert next(turns, "done") == "done"  # the turn after the failure ran


def test_the_feed_lease_survives_an_empty_redis_but_never_another_holder() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    now = [100.0]
    lease = FeedLease(client, "host:1:aa", monotonic=lambda: now[0])
    assert lease.take()
    assert not FeedLease(client, "host:2:bb", monotonic=lambda: now[0]).take()  # one holder
    client.flushall()  # Redis came back empty: taken again, the socket stays up
    assert lease.renew()
    assert holder(client) == "host:1:aa"
    client.set("orca:feed:lease", "host:2:bb:ffff")  # another holds it now: lost
    assert not lease.renew()
    assert not lease.held
    late = FeedLease(client, "host:3:cc", monotonic=lambda: now[0])
    client.delete("orca:feed:lease")
    assert late.take()
    now[0] += FEED_LEASE_TTL_S  # paused past its own deadline: it may not take it back
    client.delete("orca:feed:lease")
    assert not late.renew()
