"""The daemon: one APScheduler job per login, a main loop that only watches, and a bounded stop.

Signal handlers only set flags; the main loop pings systemd's watchdog while the scheduler proves
it is alive, and shuts down within SHUTDOWN_TIMEOUT_S of the first SIGTERM or SIGINT.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor as FuturesPool
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import redis
import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from daemon.config import Settings
from daemon.constants import (
    MAIN_LOOP_TICK_S,
    PROTOCOL_VERSION,
    RECONCILE_INTERVAL_S,
    REDIS_WATCH_INTERVAL_S,
    SHUTDOWN_TIMEOUT_S,
)
from daemon.metrics import Metrics
from daemon.outcomes import LoginState, TokenState
from daemon.refresh.policy import Attempt
from daemon.refresh.refresher import Refresher, iso
from daemon.service.health import HealthServer
from daemon.service.ownership import Ownership, Plan
from daemon.service.systemd import Notifier
from daemon.sinks.alerts import Alerter
from daemon.sinks.audit import AuditRecorder
from daemon.store.client import build_client, disconnect, get_redis_client
from daemon.store.health import RedisHealth
from daemon.store.heartbeat import Heartbeat, logins_digest, remove_heartbeat
from daemon.store.lease import holders
from daemon.store.requests import RefreshRequest, answer, forward, take_requests
from daemon.store.status import read_statuses, statuses_by_name
from daemon.store.tokens import fingerprint, login_tokens
from daemon.tradovate import TradovateClient

log = structlog.get_logger("daemon.service")

HOUSEKEEPING = "housekeeping"
SCHEDULER_TICK_S = 5.0
SCHEDULER_STALE_S = 30.0  # no tick for this long: the scheduler is hung, stop pinging the watchdog
REFRESH_REQUESTS_PER_PROBE = 10
BUDGET_REPORT_INTERVAL_S = 15.0
ONCE_LONGEST_WAIT_S = 120.0  # `run --once` waits out pacing this long, not a spent budget
CAPACITY_HINT = (
    "this address may renew fewer tokens an hour than the logins need: run another instance "
    "on another address with its own ORCA_BUDGET_GROUP (README, Scale out), or mark API-only "
    'logins when_budget_short = "relogin"'
)
SHUTDOWN_LEAVING_S = 2.5  # of the stop budget, kept for handing the leases over and closing sinks
REDIS_DOWN_REPEAT_S = 60.0  # `redis.down` again, with down_for_s, while Redis stays down


def new_instance_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        redis_client: redis.Redis | None = None,
        tradovate: TradovateClient | None = None,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.instance = new_instance_id()
        self.metrics = metrics or Metrics()
        self.redis = redis_client or get_redis_client(settings.redis)
        self.tradovate = tradovate or TradovateClient(settings.tradovate, metrics=self.metrics)
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.redis_health = RedisHealth(settings.redis.target(), self.metrics)
        self.alerts = (
            Alerter(settings.alert_webhook_url.reveal()) if settings.alert_webhook_url else None
        )
        self.audit = AuditRecorder(settings.audit_dsn.reveal()) if settings.audit_dsn else None
        self.refresher = Refresher(
            settings,
            self.tradovate,
            self.redis,
            metrics=self.metrics,
            instance=self.instance,
            clock=clock,
            redis_health=self.redis_health,
            alerts=self.alerts,
            audit=self.audit,
            may_act=self.may_act,
            fence=lambda login: self.ownership.leases.fence(login),
        )
        # Leases and heartbeat have a client of their own whose every call ends well within
        # the leases' TTL, so a hung Redis cannot hold an owner past its own deadline.
        self._lease_client = (
            redis_client if redis_client is not None else build_client(settings.redis, role="lease")
        )
        self.ownership = Ownership(
            self._lease_client, self.instance, [login.name for login in settings.logins]
        )
        self._logins_digest = logins_digest(self.ownership.logins)
        self._renew_usable, self._keeps_alive = self.refresher.configured_capacity()
        # Housekeeping (probe, leases, reconcile) has threads of its own: refreshes stuck on a
        # slow Tradovate must never keep an owner from renewing its leases.
        self.scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(settings.refresh_concurrency),
                HOUSEKEEPING: ThreadPoolExecutor(3),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self.health: HealthServer | None = None
        self.abandoned_jobs = False  # set when the stop budget ran out with refreshes in flight
        self._stop = threading.Event()
        self._force_stop = threading.Event()
        self._jobs_in_flight = 0
        self._jobs_done = threading.Condition()
        self._monotonic = monotonic  # the scheduler's liveness is judged on it
        self._scheduler_tick_at = monotonic()
        self._next_down_log_at = 0.0
        self._started_at = clock()
        self._overrunning: set[str] = set()
        self._budget_short_said: bool | None = None
        self.scheduler.add_listener(self._job_overran, EVENT_JOB_MAX_INSTANCES)
        logging.getLogger("apscheduler.scheduler").addFilter(_NO_MAX_INSTANCES_LINES)

    def may_act(self, login: str) -> bool:
        """May this instance call Tradovate or write tokens for `login` now: it holds the
        login's lease, certainly (its own deadline has not passed), and no stop has begun."""
        return not self._stop.is_set() and self.ownership.leases.is_current(login)

    def owned(self) -> list[str]:
        return self.ownership.leases.held()

    # -- lifecycle -------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Signal-safe: only sets flags. A second signal skips waiting for in-flight refreshes."""
        if self._stop.is_set():
            self._force_stop.set()
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)

    def run(self) -> int:
        """Run until stopped. Never exits because Redis or Tradovate is down."""
        self._start_health_server()
        log.info(
            "daemon.starting",
            logins=[login.name for login in self.settings.logins],
            redis=self.settings.redis.target(),
            tradovate_env=self.settings.tradovate.env,
            tradovate_url=self.settings.tradovate.base_url,
            refresh_interval_s=self.settings.refresh_interval_s,
            health=_address_text(self.health.address) if self.health else None,
            instance=self.instance,
        )
        housekeeping = {
            "tick": (self._tick, SCHEDULER_TICK_S),
            "watch-redis": (self._watch_redis, REDIS_WATCH_INTERVAL_S),
            "reconcile": (self._reconcile, RECONCILE_INTERVAL_S),
            "budget": (self._report_budget, BUDGET_REPORT_INTERVAL_S),
        }
        for job_id, (job, interval_s) in housekeeping.items():
            # Every one runs at once. (APScheduler reads next_run_time=None as "add paused".)
            self.scheduler.add_job(
                self._counted(job),
                IntervalTrigger(seconds=interval_s),
                id=job_id,
                executor=HOUSEKEEPING,
                next_run_time=datetime.now(UTC),
            )
        self.scheduler.start()
        self.notifier.notify("READY=1")
        log.info("daemon.ready", instance=self.instance, systemd=self.notifier.enabled)
        self._main_loop()
        return self._shutdown()

    def _main_loop(self) -> None:
        interval = self.notifier.watchdog_interval_s
        next_ping = 0.0
        while not self._stop.wait(MAIN_LOOP_TICK_S if interval is None else min(interval, 1.0)):
            if interval is not None and time.monotonic() >= next_ping and self.scheduler_alive():
                self.notifier.notify("WATCHDOG=1")
                next_ping = time.monotonic() + interval

    def _shutdown(self) -> int:
        """Stop scheduling, let in-flight jobs finish within the budget, then let go.

        APScheduler's own shutdown(wait=True) waits while holding the job store lock that a
        finishing job needs to reschedule itself, so the waiting is done here, paused.
        """
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
        log.info("daemon.stopping", instance=self.instance)
        self.notifier.notify("STOPPING=1")
        self.scheduler.pause()
        with self._jobs_done:
            while (
                self._jobs_in_flight
                and not self._force_stop.is_set()
                and time.monotonic() < deadline - SHUTDOWN_LEAVING_S
            ):
                self._jobs_done.wait(0.1)  # short: a second signal must be noticed
        if self._jobs_in_flight:
            self.abandoned_jobs = True
            in_flight = [s.name for s in self.refresher.states.values() if s.lock.locked()]
            log.warning("daemon.stop_timeout", in_flight=in_flight)
        self.scheduler.shutdown(wait=False)
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
        self._leave_redis()
        self._close_clients()
        disconnect(self.redis)
        if self._lease_client is not self.redis:
            disconnect(self._lease_client)

    def _close_clients(self) -> None:
        """Deliver queued alerts and history records (each within its own short bound)."""
        for background in (self.alerts, self.audit):
            if background is not None:
                background.close()
        self.tradovate.close()

    # -- one pass, for `run --once` --------------------------------------------------------

    def run_once(self) -> int:
        """Refresh every login once. 0 when all succeeded, 1 otherwise."""
        log.info(
            "daemon.once",
            logins=[login.name for login in self.settings.logins],
            redis=self.settings.redis.target(),
            tradovate_env=self.settings.tradovate.env,
        )
        try:
            attempts = self.refresh_once()
        except redis.RedisError as error:
            log.error("redis.unavailable", error=str(error), redis=self.settings.redis.target())
            return 1
        except LeaderRunning as running:
            log.error("daemon.once_refused", reason=str(running), leader=running.leader)
            return 1
        failed = sorted(name for name, attempt in attempts.items() if not attempt.ok)
        log.info("daemon.once_finished", refreshed=len(attempts) - len(failed), failed=failed)
        return 1 if failed else 0

    def refresh_once(
        self, names: list[str] | None = None, *, probe: bool = False
    ) -> dict[str, Attempt]:
        """Adopt what Redis holds, then refresh every login (or those named) once, waiting out
        auth pacing and penalty tickets; queued alerts and history are delivered before it
        returns. Raises RedisError, before any Tradovate call, when Redis does not answer:
        without Redis a fresh token could not be stored, so no session is spent on it.

        It runs under the logins' leases like a daemon: LeaderRunning when a live daemon
        holds one (ask that one instead); while it works a thread of its own renews them."""
        names = list(self.refresher.states) if names is None else names
        taken = self.ownership.leases.take(names)
        if len(taken) < len(names):
            self.ownership.leases.release(taken)
            busy = sorted(set(names) - set(taken))
            owner = holders(self._lease_client, busy[:1]).get(busy[0])
            raise LeaderRunning(owner, busy[0])
        keeping = threading.Event()
        keeper = threading.Thread(target=self._keep_leases, args=(keeping,), daemon=True)
        keeper.start()
        try:
            self.refresher.adopt_from_redis(names)
            with FuturesPool(max_workers=self.settings.refresh_concurrency) as pool:
                settled = pool.map(lambda name: self._refresh_until_settled(name, probe), names)
                attempts = dict(zip(names, settled, strict=True))
        finally:
            keeping.set()
            keeper.join()
            self.ownership.leases.release(names)
            self._close_clients()
        return attempts

    def _keep_leases(self, done: threading.Event) -> None:
        while not done.wait(REDIS_WATCH_INTERVAL_S):
            try:
                self.ownership.leases.renew()
            except redis.RedisError as error:
                self.redis_health.failed(error)

    def _refresh_until_settled(self, name: str, probe: bool = False) -> Attempt:
        """Wait out auth pacing and penalty tickets, but not an address budget that frees
        only in an hour: a one-off pass then reports the login as not refreshed."""
        attempt = self.refresher.refresh(name, force=not probe, probe=probe)
        while (
            attempt.deferred
            and attempt.delay_s <= ONCE_LONGEST_WAIT_S
            and not self._stop.wait(attempt.delay_s)
        ):
            attempt = self.refresher.refresh(name, force=not probe)
        return attempt

    def _job_overran(self, event: JobSubmissionEvent) -> None:
        """A refresh still running when its next run came: one warning per overrun, not one
        per tick (APScheduler's own lines are filtered out)."""
        login = str(event.job_id).removeprefix("refresh:")
        if login in self.refresher.states and login not in self._overrunning:
            self._overrunning.add(login)
            log.warning("token.refresh_overrun", login=login, hint="Tradovate or Redis is slow")

    # -- scheduled jobs ----------------------------------------------------------------------

    def _counted(self, job: Callable[..., None]) -> Callable[..., None]:
        """Wrap a job so shutdown can wait for the ones running. After a stop began no job
        starts: APScheduler's executor still starts jobs it had queued before it was paused."""

        def run(*args: Any) -> None:
            with self._jobs_done:
                if self._stop.is_set():
                    return
                self._jobs_in_flight += 1
            try:
                job(*args)
            finally:
                with self._jobs_done:
                    self._jobs_in_flight -= 1
                    self._jobs_done.notify_all()

        return run

    def _tick(self) -> None:
        self._scheduler_tick_at = self._monotonic()

    def scheduler_alive(self) -> bool:
        return (
            self.scheduler.running
            and self._monotonic() - self._scheduler_tick_at < SCHEDULER_STALE_S
        )

    def _watch_redis(self) -> None:
        """Every probe: heartbeat (which tells whether Redis is up), lease renewals, and the
        logins to take or let go. All on the lease client, whose calls end within a second: a
        hung Redis costs a probe, never a lease's deadline."""
        try:
            self._apply(self.ownership.probe(self._heartbeat()))
            if self.ownership.standby is None:
                self._take_refresh_requests()
        except redis.RedisError as error:
            self.redis_health.failed(error)
            self._repeat_redis_down()
            return
        finally:
            owned = len(self.owned())
            self.metrics.logins_owned.set(owned)
            self.metrics.leader.set(1 if owned else 0)
        self.redis_health.succeeded()
        self._next_down_log_at = 0.0
        if self.redis_health.came_back.is_set():
            self.redis_health.came_back.clear()
            self._reconcile()  # Redis may have come back empty: restore at once

    def _apply(self, plan: Plan) -> None:
        """Lost leases stop at once; a login assigned elsewhere is let go between refreshes
        (one running now is let go at a later probe); taken ones adopt Redis's token first."""
        if plan.lost:
            self._remove_jobs(plan.lost)
            self.refresher.forget_tokens(plan.lost)
        idle = [s for s in map(self.refresher.states.get, plan.to_release) if s is not None]
        idle = [state for state in idle if state.lock.acquire(blocking=False)]
        released = [state.name for state in idle]
        try:
            self._remove_jobs(released)
            self.ownership.leases.release(released)
        finally:
            for state in idle:
                state.lock.release()
        if released:
            self.refresher.forget_tokens(released)
            log.info(
                "logins.released", instance=self.instance, logins=released, owned=len(self.owned())
            )
        if plan.taken:
            self.refresher.adopt_from_redis(plan.taken)
            self._add_jobs(plan.taken)
            log.info(
                "logins.taken", instance=self.instance, logins=plan.taken, owned=len(self.owned())
            )
            self._report_budget()  # an owner publishes the address's capacity at once

    def _report_budget(self) -> None:
        """The address budgets in /metrics and, from an owner, in Redis for `status`; said in
        the log at the first report and whenever the verdict changes. Needed renewals are
        those of the logins this instance owns."""
        owned = len(self.owned())
        try:
            capacity = self.refresher.capacity(self.clock(), owned)
        except redis.RedisError as error:
            self.redis_health.failed(error)
            return
        gauge = self.metrics.tradovate_budget
        gauge.labels(endpoint="renew", kind="limit").set(capacity["renew_limit"])
        gauge.labels(endpoint="renew", kind="used").set(capacity["renew_used"])
        gauge.labels(endpoint="renew", kind="needed").set(capacity["renew_needed"])
        gauge.labels(endpoint="login_failure", kind="limit").set(capacity["login_failure_limit"])
        gauge.labels(endpoint="login_failure", kind="used").set(capacity["login_failure_used"])
        gauge.labels(endpoint="login_failure", kind="needed").set(0)
        if owned:
            with contextlib.suppress(redis.RedisError):
                self.refresher.budget.publish_capacity(capacity, int(BUDGET_REPORT_INTERVAL_S * 4))
        if owned and capacity["short"] != self._budget_short_said:
            self._budget_short_said = capacity["short"]
            if capacity["short"]:
                log.warning("budget.capacity", **capacity, hint=CAPACITY_HINT)
            else:
                log.info("budget.capacity", **capacity)

    def _repeat_redis_down(self) -> None:
        now = time.monotonic()
        if now >= self._next_down_log_at:
            if self._next_down_log_at:
                self.redis_health.log_down()
            self._next_down_log_at = now + REDIS_DOWN_REPEAT_S

    def _reconcile(self) -> None:
        if not self.owned():
            return
        try:
            self.refresher.reconcile()
        except redis.RedisError as error:
            self.redis_health.failed(error)

    def _take_refresh_requests(self) -> None:
        """`orca-tokens tokens refresh` and readers that saw a 401 push requests on one list
        any instance may pop; a request for a login another instance owns is passed on to it.
        Each runs on a refresh thread."""
        for request in take_requests(self._lease_client, self.instance, REFRESH_REQUESTS_PER_PROBE):
            if request is None:
                log.warning("refresh_request.invalid")
                continue
            name = None if request.login is None else self.login_of(request.login)
            owner = self.instance if name is None else holders(self._lease_client, [name])[name]
            if owner is not None and owner != self.instance:
                forward(self._lease_client, owner, request)
                continue
            self.scheduler.add_job(self._counted(self._requested_refresh), args=[request, name])

    def login_of(self, asked: str) -> str | None:
        """The configured login whose token is written under `asked`: the owner of an account
        is known here from its account list, or from the login's status in Redis."""
        name = self.refresher.login_of(asked)
        if name is None:
            found = statuses_by_name(read_statuses(self.redis, list(self.refresher.states)))
            name = found[asked].login if asked in found else None
        return name if name in self.refresher.states else None

    def _requested_refresh(self, request: RefreshRequest, login: str | None) -> None:
        """A named login (or, for a request naming none, every login this instance owns)."""
        if request.login is not None and login is None:
            outcomes = {request.login: "unknown login"}
        else:
            outcomes = {}
            for name in self.owned() if login is None else [login]:
                attempt = self.refresher.refresh(name, force=not request.probe, probe=request.probe)
                self.reschedule(name, attempt.delay_s)
                outcomes[name] = attempt.outcome
        log.info("refresh_request.done", request=request.id, probe=request.probe, outcomes=outcomes)
        with contextlib.suppress(redis.RedisError):  # the asker times out and says so
            answer(self.redis, request.id, outcomes)

    def _add_jobs(self, names: list[str]) -> None:
        """One job per login, so a failing login never delays another. The interval trigger is
        only a backstop: each run moves its own next run to when the refresher says."""
        for name in names:
            self.scheduler.add_job(
                self._counted(self._refresh_job),
                IntervalTrigger(seconds=self.settings.refresh_interval_s),
                args=[name],
                id=_job_id(name),
                next_run_time=datetime.now(UTC),
                replace_existing=True,
            )

    def _remove_jobs(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(_job_id(name))

    def _refresh_job(self, name: str) -> None:
        attempt = self.refresher.refresh(name)
        self._overrunning.discard(name)
        self.reschedule(name, attempt.delay_s)

    def reschedule(self, name: str, delay_s: float) -> None:
        with contextlib.suppress(JobLookupError):  # the job is gone when shutting down
            self.scheduler.modify_job(
                _job_id(name), next_run_time=datetime.now(UTC) + timedelta(seconds=delay_s)
            )

    def _heartbeat(self) -> Heartbeat:
        return Heartbeat(
            instance=self.instance,
            pid=os.getpid(),
            started_at=iso(self._started_at),
            at=self.clock(),
            logins=len(self.settings.logins),
            owned=len(self.owned()),
            protocol=PROTOCOL_VERSION,
            standby=self.ownership.standby is not None,
            group=self.settings.budget_group,
            address=self.settings.tradovate.local_address,
            renew_usable=self._renew_usable,
            keeps_alive=self._keeps_alive,
            logins_digest=self._logins_digest,
        )

    def _leave_redis(self) -> None:
        """A clean stop: hand every lease over at once and take the heartbeat away."""
        self.ownership.leases.release(self.owned())
        with contextlib.suppress(redis.RedisError):
            remove_heartbeat(self._lease_client, self.instance)

    # -- health ------------------------------------------------------------------------------

    def _start_health_server(self) -> None:
        if self.settings.health_addr is None:
            return
        self.health = HealthServer(
            self.settings.health_addr, self.metrics, healthy=self.healthz, ready=self.readyz
        )
        self.health.start()

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        alive = self.scheduler_alive()
        return alive, {
            "status": "ok" if alive else "scheduler not running",
            "instance": self.instance,
            "redis": self.redis_health.describe(),
            "leader": bool(self.owned()),
        }

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        """Ready when Redis answers, this instance knows which logins are its own (or stands
        by), and every one it owns has a valid token in Redis (judged by the expiry recorded
        with it) or is deliberately parked."""
        now = self.clock()
        names = sorted(self.owned())
        found: dict[str, tuple[str | None, TokenState]] = {}
        redis_up = self.redis_health.up
        if redis_up:
            try:
                found = login_tokens(self.redis, names, now)
            except redis.RedisError as error:
                self.redis_health.failed(error)
                redis_up = False
        logins = {}
        ready = bool(redis_up) and (self.ownership.settled or self.ownership.standby is not None)
        for name in names:
            token, token_word = found.get(name, (None, TokenState.UNKNOWN))
            progress = self.refresher.states[name]
            state = progress.state(now)
            ready = ready and (token_word.usable or state is LoginState.PARKED)
            logins[name] = {
                "token": token_word,
                "fingerprint": fingerprint(token) if token else None,
                "state": state,
                "last_error": progress.last_error,
                "next_attempt_at": iso(progress.next_attempt_at),
            }
        return ready, {
            "ready": ready,
            "redis": self.redis_health.describe(),
            "leader": bool(names),
            "standby": self.ownership.standby,
            "logins": logins,
        }


class LeaderRunning(Exception):
    """`run --once` or `tokens refresh` found a live daemon holding a login's lease."""

    def __init__(self, leader: str | None, login: str) -> None:
        super().__init__(
            f"a running daemon ({leader or 'unknown'}) holds the lease of {login}: "
            "ask it with `orca-tokens tokens refresh`, or stop it first"
        )
        self.leader = leader


class _NoMaxInstancesLines(logging.Filter):
    """APScheduler says "maximum number of running instances reached" at every tick of an
    overrunning job; `token.refresh_overrun` says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_NO_MAX_INSTANCES_LINES = _NoMaxInstancesLines()


def _job_id(name: str) -> str:
    return f"refresh:{name}"


def _address_text(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
