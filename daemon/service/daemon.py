"""The daemon's lifecycle: start, a main loop that only watches, and a bounded stop.

Signal handlers only set flags; the main loop pings systemd's watchdog while the scheduler proves
it is alive, and shuts down within SHUTDOWN_TIMEOUT_S of the first SIGTERM or SIGINT. What it
runs lives beside it: the components (`components`), the jobs (`jobs`), the membership round
(`membership`), refresh requests (`requests`), the budget report, the one-shot pass (`once`) and
the health answers (`readiness`).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import redis
import structlog

from daemon.clock import SteadyClock
from daemon.config import Settings
from daemon.constants import (
    MAIN_LOOP_TICK_S,
    RECONCILE_INTERVAL_S,
    REDIS_WATCH_INTERVAL_S,
    SHUTDOWN_TIMEOUT_S,
)
from daemon.feed.supervisor import PriceFeed
from daemon.metrics import Metrics
from daemon.refresh.progress import Attempt
from daemon.service.budget_report import BUDGET_REPORT_INTERVAL_S, BudgetReporter
from daemon.service.components import build_components
from daemon.service.health import HealthServer
from daemon.service.jobs import JobRunner, Jobs
from daemon.service.membership import Membership
from daemon.service.memory_watch import MEMORY_WATCH_INTERVAL_S, MemoryWatch
from daemon.service.once import LoginsHeld, OnePass
from daemon.service.readiness import Readiness
from daemon.service.requests import RequestBroker
from daemon.service.systemd import Notifier
from daemon.store.client import drop_idle
from daemon.tradovate import TradovateClient

__all__ = ["Daemon", "LoginsHeld"]

log = structlog.get_logger("daemon.service")

SHUTDOWN_LEAVING_S = 2.5  # of the stop budget, kept for handing the leases over and closing sinks


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None = None,
        lease_client: redis.Redis | None = None,
        tradovate: TradovateClient | None = None,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        jobs: Jobs | None = None,
    ) -> None:
        """`clock`: the daemon's epoch seconds; by default a SteadyClock, which a step of the
        system clock does not move (the main loop notices the step and moves the scheduler).
        `monotonic`: what lease deadlines and the scheduler's liveness are judged on. `jobs`:
        the scheduler, by default APScheduler's (`JobRunner`); tests pass one on virtual
        time."""
        self._clock = clock = clock if clock is not None else SteadyClock()
        self.components = c = build_components(
            settings,
            redis_client=redis_client,
            lease_client=lease_client,
            tradovate=tradovate,
            metrics=metrics,
            notifier=notifier,
            clock=clock,
            monotonic=monotonic,
        )
        self.settings, self.instance, self.metrics = settings, c.instance, c.metrics
        self.redis, self.redis_health, self.refresher = c.redis, c.redis_health, c.refresher
        self.ownership = c.ownership
        self.jobs = jobs or JobRunner(
            settings.refresh_concurrency, c.stopping, c.refresher.states, monotonic=monotonic
        )
        self.requests = RequestBroker(c, self.jobs)
        self.budget = BudgetReporter(c)
        self.memory = MemoryWatch(c)
        self.membership = Membership(c, self.jobs, self.requests, self.budget)
        self.readiness = Readiness(c, self.jobs.alive)
        self.once = OnePass(c)
        self.feed = (
            PriceFeed(
                settings, c.redis, c.tradovate, c.metrics, c.instance, c.stopping, clock=clock
            )
            if settings.price.symbols
            else None
        )
        self._feed_thread: threading.Thread | None = None
        self.health: HealthServer | None = None
        self.abandoned_jobs = False  # set when the stop budget ran out with work in flight
        self._force_stop = threading.Event()
        self._reread = threading.Event()

    # Read by tests, `tokens refresh` and the demo.
    def owned(self) -> list[str]:
        return self.components.owned()

    def login_of(self, asked: str) -> str | None:
        return self.requests.login_of(asked)

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        return self.readiness.healthz()

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        return self.readiness.readyz()

    def run_once(self) -> int:
        return self.once.run()

    def refresh_once(
        self, names: list[str] | None = None, *, verify: bool = False, operator: bool = False
    ) -> dict[str, Attempt]:
        return self.once.refresh(names, verify=verify, operator=operator)

    # -- lifecycle -------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Signal-safe: only sets flags. A second signal skips waiting for in-flight refreshes."""
        stopping = self.components.stopping
        if stopping.is_set():
            self._force_stop.set()
        stopping.set()

    def request_reread(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Signal-safe: SIGHUP asks for the Redis credentials to be read again (a key rotated)
        and a price feed stopped for the quota to run again."""
        self._reread.set()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reread)

    def run(self) -> int:
        """Run until stopped. Never exits because Redis or Tradovate is down."""
        self.start()
        self._main_loop()
        return self._shutdown()

    def start(self) -> None:
        """The health server, the housekeeping jobs and the scheduler; then say it is ready."""
        self._start_health_server()
        log.info(
            "daemon.starting",
            logins=[login.name for login in self.settings.logins],
            login_routes=sorted({login.route for login in self.settings.logins}),
            redis=self.settings.redis.target(),
            tradovate_env=self.settings.tradovate.env,
            tradovate_url=self.settings.tradovate.base_url,
            refresh_interval_s=self.settings.refresh_interval_s,
            health=_address_text(self.health.address) if self.health else None,
            instance=self.instance,
        )
        self.memory.check()  # the eviction policy said at start
        self.jobs.add_housekeeping(
            {
                "watch-redis": (self.membership.round, REDIS_WATCH_INTERVAL_S),
                "reconcile": (self.membership.reconcile, RECONCILE_INTERVAL_S),
                "restore-budget": (self.membership.restore_budget, REDIS_WATCH_INTERVAL_S),
                "redis-memory": (self.memory.check, MEMORY_WATCH_INTERVAL_S),
                "budget": (self.budget.report, BUDGET_REPORT_INTERVAL_S),
            }
        )
        self.jobs.start()
        if self.feed is not None:
            self._feed_thread = threading.Thread(
                target=self.feed.run, name="price-feed", daemon=True
            )
            self._feed_thread.start()
        notifier = self.components.notifier
        notifier.notify("READY=1")
        log.info("daemon.ready", instance=self.instance, systemd=notifier.enabled)

    def _main_loop(self) -> None:
        notifier = self.components.notifier
        interval = notifier.watchdog_interval_s
        next_ping = 0.0
        stopping = self.components.stopping
        while not stopping.wait(MAIN_LOOP_TICK_S if interval is None else min(interval, 1.0)):
            if self._reread.is_set():
                self._reread.clear()
                self._reconnect_redis()
                if self.feed is not None:
                    self.feed.resume()
            if isinstance(self._clock, SteadyClock) and (step_s := self._clock.step()):
                self.jobs.shift(step_s)
            if interval is not None and time.monotonic() >= next_ping and self.jobs.alive():
                notifier.notify("WATCHDOG=1")
                next_ping = time.monotonic() + interval

    def _reconnect_redis(self) -> None:
        """Idle connections go; new ones read the credential files again."""
        for client in {id(c): c for c in (self.redis, self.components.lease_client)}.values():
            drop_idle(client)
        log.info("redis.credentials_reread", credentials=self.settings.redis.credentials_from())

    def _shutdown(self) -> int:
        """Stop scheduling, let in-flight jobs finish within the budget, then let go."""
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
        log.info("daemon.stopping", instance=self.instance)
        self.components.notifier.notify("STOPPING=1")
        if not self.jobs.wait_idle(deadline - SHUTDOWN_LEAVING_S, self._force_stop):
            self.abandoned_jobs = True
            in_flight = [s.name for s in self.refresher.states.values() if s.lock.locked()]
            log.warning("daemon.stop_timeout", in_flight=in_flight)
        self.jobs.shutdown()
        if self.health is not None:
            self.health.stop()
        # Each step is bounded on its own (the lease client's timeouts, the sinks' close); the
        # whole of it runs on a helper so that the stop budget holds whatever hangs.
        leaving = threading.Thread(target=self._leave, name="stopping", daemon=True)
        leaving.start()
        leaving.join(max(0.0, deadline - time.monotonic()))
        if leaving.is_alive():
            self.abandoned_jobs = True
            log.warning("daemon.stop_timeout", step="leaving Redis and closing sinks")
        log.info("daemon.stopped", instance=self.instance)
        return 0

    def _leave(self) -> None:
        if self._feed_thread is not None:  # its socket closes within a slice of the stop
            self._feed_thread.join(SHUTDOWN_LEAVING_S / 2)
        self.membership.leave()
        self.components.close_clients()
        self.components.disconnect()

    def _start_health_server(self) -> None:
        if self.settings.health_addr is None:
            return
        self.health = HealthServer(
            self.settings.health_addr, self.metrics, healthy=self.healthz, ready=self.readyz
        )
        self.health.start()


def _address_text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
