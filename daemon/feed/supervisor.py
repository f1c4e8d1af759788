"""The desk's one market-data feed, supervised: whichever instance holds `orca:feed:lease` runs
the socket; the others stand by and take over within FEED_LEASE_TTL_S of its loss.

The holder reads `mdtoken:{ORCA_PRICE_LOGIN}` (whoever refreshes that login), resolves the symbols
(`contracts`, daily), and runs one `Session` after another. Between slices of the socket it
renews the lease, writes the prices of a quiet market again every FEED_REWRITE_S (so a key lives
while the socket does, and a dead feed lets it expire), and reconnects at once when the md token
in Redis changes, before the one in use expires. A close, an error or a 401 reconnects after a
jittered back-off (FEED_BACKOFF_S); `DeviceQuotaReached` stops the feed, still holding the lease
so that no other instance takes the quota back, until SIGHUP (`resume`) or a restart."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import redis
import structlog

from daemon.config import Settings
from daemon.constants import (
    FEED_BACKOFF_S,
    FEED_LEASE_CHECK_S,
    FEED_LEASE_RENEW_S,
    FEED_RESOLVE_EVERY_S,
    FEED_REWRITE_S,
    FEED_STEADY_S,
    FEED_TOKEN_CHECK_S,
)
from daemon.feed.contracts import Subscription, resolve
from daemon.feed.session import Disconnected, QuotaTaken, Session, Unauthorized
from daemon.feed.writer import FeedWriter, Live
from daemon.logs import fingerprint
from daemon.metrics import Metrics
from daemon.store.feed import FeedLease
from daemon.store.tokens import get_md_token, get_token, report_unauthorized
from daemon.token_format import iso
from daemon.tradovate import TradovateClient, TradovateError
from daemon.tradovate.contracts import ContractLibrary

log = structlog.get_logger("daemon.feed")


@dataclass
class _Due:
    """When each of the holder's chores is next due (monotonic)."""

    lease: float = 0.0
    token: float = 0.0
    rewrite: float = 0.0


class PriceFeed:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        tradovate: TradovateClient,
        metrics: Metrics,
        instance: str,
        stopping: threading.Event,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._price = settings.price
        self._source_address = settings.tradovate.local_address
        self._client = client
        self._library = ContractLibrary(tradovate)
        self._metrics = metrics
        self._instance = instance
        self._stopping = stopping
        self._clock, self._monotonic = clock, monotonic
        self._rng = rng or random.Random()
        self.lease = FeedLease(client, instance, monotonic=monotonic)
        self._writer = FeedWriter(client, metrics, settings.price, instance, clock)
        self._resume = threading.Event()
        self.stopped: str | None = None  # why the feed stopped for good (DeviceQuotaReached)
        self.connected = False
        self.reconnects = 0
        self._subscriptions: list[Subscription] = []
        self._resolved_at: float | None = None
        self._live: Live | None = None
        self._due = _Due()
        self._last_error: str | None = None
        self._failures = 0  # in a row: the back-off grows with them

    def resume(self) -> None:
        """SIGHUP: a feed stopped for the quota runs again (the operator took it back)."""
        self._resume.set()

    def run(self) -> None:
        """The feed's thread: until `stopping`."""
        try:
            while not self._stopping.is_set():
                if self._resume.is_set():
                    self._resume.clear()
                    if self.stopped is not None:
                        log.info("feed.resumed", instance=self._instance)
                        self.stopped, self._failures = None, 0
                try:
                    wait_s = self._one_turn()
                except Exception as error:  # a bug must not end the desk's prices for good
                    log.error("feed.failed", error=type(error).__name__, instance=self._instance)
                    wait_s = self._backoff()
                self._stopping.wait(wait_s)
        finally:
            self._set_connected(False)
            self._writer.close()
            self.lease.release()

    def _one_turn(self) -> float:
        """Hold the lease, then one connection; how long to wait before the next turn."""
        try:
            # Held from an earlier turn, it is renewed first: opening a socket may take
            # FEED_OPEN_TIMEOUT_S, all of it within the lease's deadline.
            if not (self.lease.held and self.lease.renew()) and not self.lease.take():
                self._metrics.price_age.clear()  # only the holder says how old prices are
                return FEED_LEASE_CHECK_S
            if self.stopped is not None:
                self._keep_lease_while_stopped()
                return FEED_LEASE_RENEW_S
            token = get_md_token(self._price.login, client=self._client)
            subscriptions = self._current_subscriptions()
        except (redis.RedisError, TradovateError) as error:
            self._say_error(f"{type(error).__name__}: {error}")
            return self._backoff()
        if token is None or not subscriptions:
            # At start the login has no token yet: looked for again soon, said once (an
            # unknown symbol is a warning of its own, `feed.symbol_unknown`).
            why = "no md token in Redis yet" if token is None else "no symbol resolved"
            if why != self._last_error:
                log.info("feed.waiting", why=why, login=self._price.login)
            self._last_error = why
            return FEED_LEASE_CHECK_S
        return self._connect(token, subscriptions)

    def _connect(self, token: str, subscriptions: list[Subscription]) -> float:
        live = self._live = Live(token, subscriptions)
        contracts = list({s.contract.name: s.contract.id for s in subscriptions}.items())
        session = Session(
            self._price.md_url,
            token,
            contracts,
            live.book,
            on_quotes=self._write,
            source_address=self._source_address,
            monotonic=self._monotonic,
        )
        started = self._monotonic()
        self._due = _Due(lease=started + FEED_LEASE_RENEW_S, token=started, rewrite=started)
        reason = "error"
        try:
            reason = session.run(self._tick)
            log.info("feed.reconnecting", reason=reason, fingerprint=fingerprint(token))
        except QuotaTaken:
            self.stopped = "DeviceQuotaReached: another platform took the market-data quota"
            log.error(
                "feed.quota_taken",
                instance=self._instance,
                hint="the feed stops rather than take it back; `kill -HUP` the daemon (or "
                "restart it) once the other platform is done: docs/operate.md#price-feed",
            )
            return FEED_LEASE_RENEW_S
        except Unauthorized as refused:
            self._say_error(f"{refused} (md token {fingerprint(token)})")
            self._report_refused()
        except Disconnected as closed:
            self._say_error(str(closed))
        finally:
            self._set_connected(False)
            self._writer.count(live)
            self._live = None
            self.reconnects += 1
            self._metrics.price_feed_reconnects.inc()
            self._publish_status_quietly()
        if self._monotonic() - started >= FEED_STEADY_S:
            self._failures = 0  # it ran: the back-off starts over
        if reason in ("md token renewed", "contracts due"):
            return 0.0
        if reason in ("stopping", "lease lost"):
            return FEED_LEASE_CHECK_S
        return self._backoff()

    def _tick(self) -> str | None:
        """Between slices of the socket: a reason to end the connection, or None."""
        live = self._live
        assert live is not None
        if not self.connected:
            self._set_connected(True)
            live.connected_at = iso(self._clock())
            self._last_error = None
            log.info("feed.connected", symbols=[s.symbol for s in live.subscriptions])
        now = self._monotonic()
        if self._stopping.is_set():
            return "stopping"
        if now >= self._due.lease:
            self._due.lease = now + FEED_LEASE_RENEW_S
            if not self.lease.renew():
                log.warning("feed.lease_lost", instance=self._instance)
                return "lease lost"
        if not self.lease.held:  # no renewal answered in time: another may take it now
            return "lease lost"
        try:
            if now >= self._due.token:
                self._due.token = now + FEED_TOKEN_CHECK_S
                current = get_md_token(self._price.login, client=self._client)
                if current is not None and current != live.token:
                    return "md token renewed"
            if now >= self._due.rewrite:
                self._due.rewrite = now + FEED_REWRITE_S
                self._writer.count(live)
                self._writer.settle()
                self._write(live.book.known())
                self._publish_status()
        except redis.RedisError as error:
            self._say_error(f"Redis: {type(error).__name__}")
        if self._resolved_at is not None and self._clock() >= (
            self._resolved_at + FEED_RESOLVE_EVERY_S
        ):
            return "contracts due"
        return None

    def _write(self, changed: Collection[int]) -> None:
        if self._live is None or not changed:
            return
        try:
            self._writer.prices(self._live, changed)
        except redis.RedisError as error:
            self._say_error(f"Redis: {type(error).__name__}")

    def _publish_status(self) -> None:
        self._writer.status(
            self._live,
            connected=self.connected,
            reconnects=self.reconnects,
            stopped=self.stopped,
            error=self._last_error,
        )

    def _report_refused(self) -> None:
        """A 401 on the socket, told as a trading program tells one: the login's owner checks
        its token and logs in again if Tradovate closed the session."""
        try:
            report_unauthorized(self._price.login, client=self._client)
        except redis.RedisError:
            return

    def _publish_status_quietly(self) -> None:
        """Between connections, best effort: the answers to the last prices (so the next
        connection's first store starts with none unread), then the status (disconnected, and
        why)."""
        for step in (self._writer.settle, self._publish_status):
            try:
                step()
            except redis.RedisError:
                continue

    def _keep_lease_while_stopped(self) -> None:
        """Stopped for the quota: the lease stays held (no other instance takes the quota
        back) and the status says why."""
        if self.lease.renew():
            self._publish_status()

    def _current_subscriptions(self) -> list[Subscription]:
        """The symbols' contracts, resolved again once a day (a root rolls to the next
        month). Tradovate's contract library is asked with the login's access token."""
        now = self._clock()
        if self._resolved_at is None or now >= self._resolved_at + FEED_RESOLVE_EVERY_S:
            access = get_token(self._price.login, client=self._client)
            if access is None:
                return []
            self._subscriptions = resolve(self._library, access, self._price.symbols, now)
            self._resolved_at = now
            log.info(
                "feed.symbols",
                resolved={s.symbol: s.contract.name for s in self._subscriptions},
            )
        return self._subscriptions

    def _backoff(self) -> float:
        """1 s, doubling to 60 s, each jittered down to half: many desks do not reconnect in
        step after Tradovate's maintenance."""
        low, high = FEED_BACKOFF_S
        wait_s = min(high, low * 2 ** min(self._failures, 10)) * self._rng.uniform(0.5, 1.0)
        self._failures += 1
        return float(wait_s)

    def _set_connected(self, connected: bool) -> None:
        self.connected = connected
        self._metrics.price_feed_connected.set(1 if connected else 0)

    def _say_error(self, error: str) -> None:
        """A failure, said once while it repeats (the back-off keeps trying)."""
        if error != self._last_error:
            log.warning("feed.disconnected", error=error, instance=self._instance)
        self._last_error = error
