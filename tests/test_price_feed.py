"""The price feed with real processes: a daemon runs the desk's one market-data socket against
the simulator and writes `price:{symbol}:latest` as the reference has it; it reconnects with
a renewed md token, after a close from the server's side, and stops when the quota is taken
(until SIGHUP); two instances never hold two sockets, and the survivor takes over a killed one."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate
from tests.helpers import Spawned, daemon_env, http_get, metric_value, user

pytestmark = [pytest.mark.e2e]

FIELDS = {"Last", "Bid", "Ask", "Volume", "High", "Low", "Timestamp"}


@pytest.fixture
def fake() -> Iterator[FakeTradovate]:
    with FakeTradovate([user("APEX_1", accounts=1)], token_lifetime_s=4_800) as running:
        running.market.quotes_per_s = 50
        yield running


def feed_env(fake: FakeTradovate, server: RedisServer, **extra: str) -> dict[str, str]:
    return daemon_env(
        fake,
        server.url,
        ORCA_PRICE_SYMBOLS=f"{fake.market.front_month('MNQ')},ES",
        TRADOVATE_MD_URL=fake.market.url,
        ORCA_HEALTH_ADDR="127.0.0.1:0",
        **extra,
    )


def price_of(server: RedisServer, symbol: str) -> dict[str, Any] | None:
    value = server.client().get(f"price:{symbol}:latest")
    return json.loads(value) if value else None


def test_the_feed_writes_each_symbol_in_the_reference_shape_and_publishes_it_in_order(
    fake: FakeTradovate, redis_server: RedisServer, processes: Spawned, tmp_path: Path
) -> None:
    mnq = fake.market.front_month("MNQ")  # an explicit contract, listed whatever the date
    subscriber = redis_server.client().pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(f"price:{mnq}")
    legacy = redis_server.client().pubsub(ignore_subscribe_messages=True)
    legacy.subscribe(f"TRADOVATE_{mnq}_PRICE")
    env = feed_env(fake, redis_server, ORCA_PRICE_LEGACY_CHANNELS="true")
    daemon = processes.start(env, cwd=str(tmp_path))
    es = fake.market.front_month("ES")
    wait_for(lambda: price_of(redis_server, mnq) and price_of(redis_server, "ES"), what="prices")
    quote = price_of(redis_server, mnq)
    assert quote is not None
    assert set(quote) == FIELDS
    assert all(isinstance(quote[f], int | float) for f in FIELDS)
    assert abs(quote["Timestamp"] / 1000 - time.time()) < 5  # the quote's own time, in ms
    assert 0 < redis_server.client().ttl(f"price:{mnq}:latest") <= 5
    # A root names its front month: both keys hold the same JSON.
    wait_for(lambda: price_of(redis_server, es) == price_of(redis_server, "ES"), what="root")
    stamps: list[int] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        message = subscriber.get_message(timeout=0.5)
        if message:
            stamps.append(json.loads(message["data"])["Timestamp"])
    assert len(stamps) >= 10
    assert stamps == sorted(stamps)  # published in order
    assert fake.market.most_open == 1
    bot = wait_for(lambda: legacy.get_message(timeout=0.5), what="the desk bot's channel")
    assert set(json.loads(bot["data"])) == {"LAST", "TIMESTAMP", "INSTRUMENT"}
    assert json.loads(bot["data"])["INSTRUMENT"] == mnq
    event = daemon.event("feed.symbols")
    assert event["resolved"] == {mnq: mnq, "ES": es}
    health = daemon.event("daemon.starting")["health"]
    _, metrics = http_get(f"http://{health}/metrics")
    assert metric_value(metrics, "orca_price_feed_connected") == 1
    assert metric_value(metrics, f'orca_price_quotes_total{{symbol="{mnq}"}}') > 0
    assert 0 <= metric_value(metrics, 'orca_price_age_seconds{symbol="ES"}') < 5
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0
    wait_for(lambda: fake.market.open_now == 0, what="the socket closed at stop")


def test_a_quiet_market_keeps_its_keys_and_a_dead_feed_lets_them_expire(
    fake: FakeTradovate, redis_server: RedisServer, processes: Spawned, tmp_path: Path
) -> None:
    mnq = fake.market.front_month("MNQ")  # an explicit contract, listed whatever the date
    daemon = processes.start(feed_env(fake, redis_server), cwd=str(tmp_path))
    wait_for(lambda: price_of(redis_server, mnq), what="a price")
    fake.market.quotes_per_s = 0.0001  # nothing trades (after a quote already on its way)
    time.sleep(0.5)
    quiet = price_of(redis_server, mnq)
    for _ in range(14):  # 7 s: longer than the key's 5 s TTL
        time.sleep(0.5)
        assert redis_server.client().ttl(f"price:{mnq}:latest") >= 2
    assert price_of(redis_server, mnq)["Timestamp"] == quiet["Timestamp"]  # type: ignore[index]
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    wait_for(lambda: price_of(redis_server, mnq) is None, timeout=7, what="the key expired")


@pytest.mark.long
def test_a_renewed_md_token_reconnects_with_it_and_the_keys_never_lapse(
    redis_server: RedisServer, processes: Spawned, tmp_path: Path
) -> None:
    with FakeTradovate([user("APEX_1", accounts=1)], token_lifetime_s=24) as fake:
        fake.market.quotes_per_s = 50
        mnq = fake.market.front_month("MNQ")
        processes.start(feed_env(fake, redis_server), cwd=str(tmp_path))
        wait_for(lambda: price_of(redis_server, mnq), what="a price")
        missing = watch_keys(redis_server, [mnq, "ES"], seconds=30)
        assert missing == 0
        tokens = fake.market.authorized_tokens
        assert len(set(tokens)) >= 2  # the renewed token authorized a new socket
        assert fake.market.most_open == 1
        assert fake.market.refused_tokens == 0


def test_a_close_from_the_server_reconnects_and_a_taken_quota_stops_until_sighup(
    fake: FakeTradovate, redis_server: RedisServer, processes: Spawned, tmp_path: Path
) -> None:
    daemon = processes.start(feed_env(fake, redis_server), cwd=str(tmp_path))
    wait_for(lambda: fake.market.open_now == 1, what="a socket")
    assert fake.market.close_all("maintenance") == 1
    wait_for(lambda: fake.market.connections == 2 and fake.market.open_now == 1, what="again")
    assert fake.market.take_quota() == 1
    daemon.event("feed.quota_taken")
    time.sleep(3)  # the back-off would have reconnected by now: it must not
    assert fake.market.connections == 2
    status = json.loads(str(redis_server.client().get("orca:feed:status")))
    assert status["stopped"].startswith("DeviceQuotaReached")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: fake.market.connections == 3 and fake.market.open_now == 1, what="resumed")
    daemon.event("feed.resumed")


@pytest.mark.long
def test_two_instances_hold_one_socket_and_the_survivor_takes_a_killed_ones_over(
    fake: FakeTradovate, redis_server: RedisServer, processes: Spawned, tmp_path: Path
) -> None:
    mnq = fake.market.front_month("MNQ")  # an explicit contract, listed whatever the date
    first = processes.start(feed_env(fake, redis_server), cwd=str(tmp_path))
    wait_for(lambda: fake.market.open_now == 1, what="a socket")
    second = processes.start(feed_env(fake, redis_server), cwd=str(tmp_path))
    second.event("daemon.ready")
    time.sleep(3)
    assert fake.market.connections == 1
    first.signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    wait_for(lambda: fake.market.connections == 2 and fake.market.open_now == 1, timeout=30)
    assert time.monotonic() - killed_at < 30
    assert fake.market.most_open == 1
    wait_for(lambda: price_of(redis_server, mnq), what="prices from the survivor")


def test_prices_come_back_after_redis_restarts_or_stops_answering(
    fake: FakeTradovate, own_redis_server: RedisServer, processes: Spawned, tmp_path: Path
) -> None:
    """The feed's writes are sent on a connection of their own without waiting: a Redis that
    restarts empty (an Azure failover) or stops answering for a while (SIGSTOP) costs prices
    only while it lasts, and the socket to Tradovate is never dropped for it."""
    mnq = fake.market.front_month("MNQ")
    daemon = processes.start(feed_env(fake, own_redis_server), cwd=str(tmp_path))
    wait_for(lambda: price_of(own_redis_server, mnq), what="a price")
    own_redis_server.restart()
    wait_for(lambda: price_of(own_redis_server, mnq), timeout=15, what="prices after a restart")
    assert own_redis_server.process is not None
    own_redis_server.process.send_signal(signal.SIGSTOP)
    time.sleep(3)  # the stop itself: writes pile up unanswered
    own_redis_server.process.send_signal(signal.SIGCONT)
    stamp = price_of(own_redis_server, mnq)["Timestamp"]  # type: ignore[index]
    wait_for(
        lambda: price_of(own_redis_server, mnq)["Timestamp"] > stamp,  # type: ignore[index]
        timeout=15,
        what="fresh prices after the stop",
    )
    assert fake.market.connections == 1  # the market-data socket rode it out
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(timeout=15) == 0


def watch_keys(server: RedisServer, symbols: list[str], seconds: float) -> int:
    """Samples every 0.25 s in which a symbol's key was missing."""
    client = server.client()
    missing, stop = 0, threading.Event()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        values = client.mget([f"price:{s}:latest" for s in symbols])
        missing += sum(1 for v in values if v is None)
        stop.wait(0.25)
    return missing
