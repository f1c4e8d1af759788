"""The daemon's jobs on APScheduler 3, and every workaround it needs in one place: jobs counted
in flight so a stop can wait for them (APScheduler's own shutdown(wait=True) holds the job store
lock a finishing job needs), no job started after a stop began, `next_run_time` given explicitly
(None means "add paused"), one `token.refresh_overrun` instead of its per-tick lines, and jobs
that move their own next run."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = structlog.get_logger("daemon.service")

HOUSEKEEPING = "housekeeping"
SCHEDULER_TICK_S = 5.0
SCHEDULER_STALE_S = 30.0  # no tick for this long: the scheduler is hung, stop pinging the watchdog


class Jobs(Protocol):
    """What the daemon asks of its scheduler: `JobRunner` in production (APScheduler, wall
    time); the tests' virtual-time runner has the same methods."""

    def add_housekeeping(self, jobs: dict[str, tuple[Callable[[], None], float]]) -> None: ...
    def add_logins(
        self, names: list[str], refresh: Callable[[str], float], backstop_s: float
    ) -> None: ...
    def remove_logins(self, names: list[str]) -> None: ...
    def submit(self, job: Callable[..., None], *args: Any) -> None: ...
    def reschedule(self, name: str, delay_s: float) -> None: ...
    def shift(self, step_s: float) -> None: ...
    def start(self) -> None: ...
    def alive(self) -> bool: ...
    def wait_idle(self, deadline: float, force: threading.Event) -> bool: ...
    def shutdown(self) -> None: ...


class JobRunner:
    """Login jobs on `concurrency` refresh threads; housekeeping (membership, leases, reconcile)
    on threads of its own, so refreshes stuck on a slow Tradovate never keep an owner from
    renewing its leases."""

    def __init__(
        self,
        concurrency: int,
        stopping: threading.Event,
        logins: Collection[str],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(concurrency),
                HOUSEKEEPING: ThreadPoolExecutor(3),
            },
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._stopping = stopping
        self._logins = logins
        self._in_flight = 0
        self._done = threading.Condition()
        self._monotonic = monotonic  # the scheduler's liveness is judged on it
        self._tick_at = monotonic()
        self._overrunning: set[str] = set()
        self.scheduler.add_listener(self._job_overran, EVENT_JOB_MAX_INSTANCES)
        logging.getLogger("apscheduler.scheduler").addFilter(_NO_MAX_INSTANCES_LINES)

    def add_housekeeping(self, jobs: dict[str, tuple[Callable[[], None], float]]) -> None:
        """Each job every its interval, the first run at once; a tick job proves liveness."""
        jobs = {"tick": (self._tick, SCHEDULER_TICK_S), **jobs}
        for job_id, (job, interval_s) in jobs.items():
            self.scheduler.add_job(
                self._counted(job),
                IntervalTrigger(seconds=interval_s, timezone=UTC),
                id=job_id,
                executor=HOUSEKEEPING,
                next_run_time=datetime.now(UTC),
            )

    def add_logins(
        self, names: list[str], refresh: Callable[[str], float], backstop_s: float
    ) -> None:
        """One job per login, so a failing login never delays another. The interval trigger is
        only a backstop: each run moves its own next run to the delay `refresh` returns."""
        for name in names:
            self.scheduler.add_job(
                self._counted(self._login_job),
                IntervalTrigger(seconds=backstop_s, timezone=UTC),
                args=[name, refresh],
                id=_job_id(name),
                next_run_time=datetime.now(UTC),
                replace_existing=True,
            )

    def remove_logins(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(JobLookupError):
                self.scheduler.remove_job(_job_id(name))

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        """A one-off job on a refresh thread, now."""
        self.scheduler.add_job(self._counted(job), args=list(args))

    def reschedule(self, name: str, delay_s: float) -> None:
        with contextlib.suppress(JobLookupError):  # the job is gone when shutting down
            self.scheduler.modify_job(
                _job_id(name), next_run_time=datetime.now(UTC) + timedelta(seconds=delay_s)
            )

    def shift(self, step_s: float) -> None:
        """The system clock stepped by `step_s`: every next run moves with it, so each keeps
        the delay it was given (a step back would hold them all for its length, a step forward
        would run them all at once)."""
        for job in self.scheduler.get_jobs():
            if job.next_run_time is not None:
                with contextlib.suppress(JobLookupError):
                    job.modify(next_run_time=job.next_run_time + timedelta(seconds=step_s))
        self.scheduler.wakeup()

    def start(self) -> None:
        self.scheduler.start()

    def alive(self) -> bool:
        return self.scheduler.running and self._monotonic() - self._tick_at < SCHEDULER_STALE_S

    def wait_idle(self, deadline: float, force: threading.Event) -> bool:
        """Pause, then wait until no job runs, `force` is set or the monotonic deadline passes.
        True when none is left running."""
        self.scheduler.pause()
        with self._done:
            while self._in_flight and not force.is_set() and time.monotonic() < deadline:
                self._done.wait(0.1)  # short: a second signal must be noticed
            return not self._in_flight

    def shutdown(self) -> None:
        self.scheduler.shutdown(wait=False)

    def _login_job(self, name: str, refresh: Callable[[str], float]) -> None:
        delay_s = refresh(name)
        self._overrunning.discard(name)
        self.reschedule(name, delay_s)

    def _counted(self, job: Callable[..., None]) -> Callable[..., None]:
        """Wrap a job so a stop can wait for the ones running. After a stop began no job
        starts: APScheduler's executor still starts jobs it had queued before it was paused."""

        def run(*args: Any) -> None:
            with self._done:
                if self._stopping.is_set():
                    return
                self._in_flight += 1
            try:
                job(*args)
            finally:
                with self._done:
                    self._in_flight -= 1
                    self._done.notify_all()

        return run

    def _tick(self) -> None:
        self._tick_at = self._monotonic()

    def _job_overran(self, event: JobSubmissionEvent) -> None:
        """A refresh still running when its next run came: one warning per overrun, not one
        per tick (APScheduler's own lines are filtered out)."""
        login = str(event.job_id).removeprefix("refresh:")
        if login in self._logins and login not in self._overrunning:
            self._overrunning.add(login)
            log.warning("token.refresh_overrun", login=login, hint="Tradovate or Redis is slow")


class _NoMaxInstancesLines(logging.Filter):
    """APScheduler says "maximum number of running instances reached" at every tick of an
    overrunning job; `token.refresh_overrun` says it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


_NO_MAX_INSTANCES_LINES = _NoMaxInstancesLines()


def _job_id(name: str) -> str:
    return f"refresh:{name}"
