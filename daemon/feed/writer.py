"""What the feed writes to Redis: each changed contract's price under every name its symbol
gives (`price:{name}:latest` and its channel, through the `price` module's Publisher; the desk
bot's channels when asked), and the feed's status for `status` and `doctor`."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import redis

from daemon.config import PriceSettings
from daemon.feed.contracts import Subscription
from daemon.feed.quotes import QuoteBook
from daemon.metrics import Metrics
from daemon.store import price
from daemon.store.feed import write_status

LEGACY_CHANNEL = "TRADOVATE_{symbol}_PRICE"  # the desk bot's channels, read for `LAST`


@dataclass
class Live:
    """The connection now: its token, what it subscribed, and the book it fills."""

    token: str
    subscriptions: list[Subscription]
    book: QuoteBook = field(default_factory=QuoteBook)
    connected_at: str | None = None
    written: Tally[str] = field(default_factory=Tally)  # per symbol, not yet in the metric

    @cached_property
    def routes(self) -> dict[int, list[Subscription]]:
        """Each contract's subscriptions: two symbols may name one contract."""
        routes: dict[int, list[Subscription]] = {}
        for subscription in self.subscriptions:
            routes.setdefault(subscription.contract.id, []).append(subscription)
        return routes


class FeedWriter:
    def __init__(
        self,
        client: redis.Redis,
        metrics: Metrics,
        settings: PriceSettings,
        instance: str,
        clock: Callable[[], float],
    ) -> None:
        self._client = client
        self._metrics = metrics
        self._settings = settings
        self._instance = instance
        self._clock = clock
        self._publisher = price.Publisher(client)

    def prices(self, live: Live, changed: Iterable[int]) -> None:
        """The changed contracts' prices, sent at once; a refusal is raised by `settle`.
        RedisError propagates. They reach `orca_price_quotes_total` at `count`."""
        prices: dict[str, dict[str, Any]] = {}
        legacy: dict[str, dict[str, Any]] = {}
        book, routes, written = live.book, live.routes, live.written
        for contract in changed:
            latest = book.price(contract)
            for subscription in routes.get(contract, ()):
                for name in subscription.names:
                    prices[name] = latest
                    if self._settings.legacy_channels:
                        message = book.legacy(contract, subscription.contract.name)
                        legacy[LEGACY_CHANNEL.format(symbol=name)] = message
                written[subscription.symbol] += 1
        self._publisher.store_many(prices, also_publish=legacy)

    def count(self, live: Live) -> None:
        """The quotes written since, into `orca_price_quotes_total`: each second, not each
        quote, whose metric lock cost more at a feed's rate than the count is worth."""
        for symbol, written in live.written.items():
            self._metrics.price_quotes.labels(symbol).inc(written)
        live.written.clear()

    def settle(self) -> None:
        """The answers to the prices sent so far: a refusal among them raises RedisError."""
        self._publisher.settle()

    def close(self) -> None:
        self._publisher.close()

    def status(
        self,
        live: Live | None,
        *,
        connected: bool,
        reconnects: int,
        stopped: str | None,
        error: str | None,
    ) -> None:
        """`orca:feed:status`, and each symbol's age as a metric. RedisError propagates."""
        now_ms = self._clock() * 1000
        symbols = {}
        subscriptions, book = (live.subscriptions, live.book) if live else ([], QuoteBook())
        for subscription in subscriptions:
            contract = subscription.contract.id
            stamp = book.price(contract)["Timestamp"] if book.complete(contract) else None
            if stamp is not None:
                self._metrics.price_age.labels(subscription.symbol).set((now_ms - stamp) / 1000)
            symbols[subscription.symbol] = {
                "contract": subscription.contract.name,
                "quote_ms": stamp,
            }
        write_status(
            self._client,
            {
                "instance": self._instance,
                "connected": connected,
                "since": live.connected_at if live else None,
                "login": self._settings.login,
                "symbols": symbols,
                "reconnects": reconnects,
                "stopped": stopped,
                "error": error,
                "at_ms": int(now_ms),
            },
        )
