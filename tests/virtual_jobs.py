"""The daemon's jobs on virtual time: `VirtualJobs` has the methods of `daemon.service.jobs.Jobs`
(APScheduler's `JobRunner` in production) and runs every job, in the order they fall due, on one
thread, moving an injected clock to each job's time. So a whole `Daemon` (membership rounds,
refresh requests, renewals, account checks, reconcile) runs hours in seconds, in-process."""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fakeredis

from daemon.metrics import Metrics
from daemon.refresh.refresher import Refresher
from daemon.service.daemon import Daemon
from daemon.service.systemd import Notifier
from daemon.sim.tradovate import FakeTradovate
from daemon.timescale import key_margin_s
from daemon.tradovate import TradovateClient
from tests.helpers import FakeClock, settings_for, tradovate_routes


@dataclass(order=True)
class _Due:
    at: float
    order: int
    job_id: str = field(compare=False)


class VirtualJobs:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._queue: list[_Due] = []
        self._jobs: dict[str, tuple[Callable[[], None], float | None]] = {}  # id: (job, every_s)
        self._due_at: dict[str, float] = {}
        self._order = itertools.count()
        self._one_offs = itertools.count()

    # -- the Jobs interface --------------------------------------------------------------------

    def add_housekeeping(self, jobs: dict[str, tuple[Callable[[], None], float]]) -> None:
        for job_id, (job, interval_s) in jobs.items():
            self._add(job_id, job, interval_s, at=self.clock())

    def add_logins(
        self, names: list[str], refresh: Callable[[str], float], backstop_s: float
    ) -> None:
        for name in names:

            def job(name: str = name) -> None:
                self.reschedule(name, refresh(name))

            self._add(_job_id(name), job, backstop_s, at=self.clock())

    def remove_logins(self, names: list[str]) -> None:
        for name in names:
            self._jobs.pop(_job_id(name), None)
            self._due_at.pop(_job_id(name), None)

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        self._add(f"once:{next(self._one_offs)}", lambda: job(*args), None, at=self.clock())

    def reschedule(self, name: str, delay_s: float) -> None:
        if _job_id(name) in self._jobs:
            self._set_due(_job_id(name), self.clock() + delay_s)

    def shift(self, step_s: float) -> None:
        for job_id, at in list(self._due_at.items()):
            self._set_due(job_id, at + step_s)

    def start(self) -> None:
        """Nothing runs until `run_for` or `run_until` moves the clock."""

    def alive(self) -> bool:
        return True

    def wait_idle(self, deadline: float, force: threading.Event) -> bool:
        return True  # nothing runs between calls to run_for

    def shutdown(self) -> None:
        self._jobs.clear()
        self._due_at.clear()

    # -- virtual time --------------------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        self.run_until(self.clock() + seconds)

    def run_until(self, end: float) -> None:
        """Run each job that falls due before `end`, in time order, the clock at its time."""
        while self._queue and self._queue[0].at <= end:
            due = heapq.heappop(self._queue)
            if self._due_at.get(due.job_id) != due.at:
                continue  # rescheduled or removed since it was queued
            self.clock.now = max(self.clock.now, due.at)
            job, every_s = self._jobs[due.job_id]
            if every_s is None:
                self._jobs.pop(due.job_id)
                self._due_at.pop(due.job_id)
            else:
                self._set_due(due.job_id, due.at + every_s)  # a job may move it again
            job()
        self.clock.now = max(self.clock.now, end)

    def _add(self, job_id: str, job: Callable[[], None], every_s: float | None, at: float) -> None:
        self._jobs[job_id] = (job, every_s)
        self._set_due(job_id, at)

    def _set_due(self, job_id: str, at: float) -> None:
        self._due_at[job_id] = at
        heapq.heappush(self._queue, _Due(at, next(self._order), job_id))


def _job_id(name: str) -> str:
    return f"refresh:{name}"


@dataclass
class VirtualDesk:
    """A whole daemon in-process on virtual time against the simulator (answered through respx):
    Redis is fakeredis, whose TTLs run on the wall clock, so a key's life is judged here from
    the token it holds (it expires `margin_s` before that token)."""

    daemon: Daemon
    jobs: VirtualJobs
    redis: fakeredis.FakeRedis
    fake: FakeTradovate
    margin_s: float

    def key_valid(self, name: str) -> bool:
        """`token:{name}` holds a token Tradovate accepts, and its key has not yet run out."""
        token = self.redis.get(f"token:{name}")
        expiry = self.fake.expiry_of(str(token)) if token else None
        return (
            expiry is not None
            and self.jobs.clock() < expiry - self.margin_s
            and (self.fake.is_live(str(token)))
        )


@contextmanager
def virtual_desk(fake: FakeTradovate, clock: FakeClock, **env: str) -> Iterator[VirtualDesk]:
    """`Daemon` started on `VirtualJobs`, its clock, its leases' monotonic time and the
    simulator's all `clock`."""
    settings = settings_for(fake, ORCA_HEALTH_ADDR="", **env)
    metrics = Metrics()
    store = fakeredis.FakeRedis(decode_responses=True)
    jobs = VirtualJobs(clock)
    with tradovate_routes(fake):
        daemon = Daemon(
            settings,
            redis_client=store,
            lease_client=store,
            tradovate=TradovateClient(settings.tradovate, metrics=metrics, clock=clock),
            metrics=metrics,
            notifier=Notifier(environ={}),
            clock=clock,
            monotonic=clock,
            jobs=jobs,
        )
        daemon.start()
        lifetime_s = fake.token_lifetime_s
        yield VirtualDesk(daemon, jobs, store, fake, key_margin_s(lifetime_s, fake.budget_window_s))
        jobs.shutdown()


def refresher_jobs(refresher: Refresher, clock: FakeClock, *, floor_s: float = 0.0) -> VirtualJobs:
    """Each of the refresher's logins as a job on virtual time: its next run when its attempt
    says (at least `floor_s` later), without the rest of the daemon."""
    jobs = VirtualJobs(clock)
    jobs.add_logins(
        list(refresher.states),
        lambda name: max(refresher.refresh(name).delay_s, floor_s),
        backstop_s=math.inf,
    )
    return jobs
