"""A step of the system clock (2 h forward, 10 min back) costs no session and stalls nothing:
the daemon's time is a SteadyClock, and the scheduler's next runs move with a noticed step."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from structlog.testing import capture_logs

from daemon.clock import SteadyClock
from daemon.constants import CLOCK_STEP_S
from daemon.metrics import Metrics
from daemon.refresh.build import build_refreshing
from daemon.service.jobs import JobRunner
from daemon.sim.tradovate import FakeTradovate
from daemon.tradovate import TradovateClient
from tests.helpers import FakeClock, settings_for, tradovate_routes, user
from tests.virtual_jobs import refresher_jobs

HOUR_S = 3_600.0


class SystemClock:
    """The host's clock: true time, plus whatever steps it took."""

    def __init__(self, true: FakeClock) -> None:
        self.true = true
        self.stepped_s = 0.0

    def __call__(self) -> float:
        return self.true() + self.stepped_s


def test_a_steady_clock_moves_with_monotonic_time_and_names_a_step_once() -> None:
    true = FakeClock(1_000_000.0)
    system = SystemClock(true)
    steady = SteadyClock(wall=system, monotonic=lambda: true() - 1_000_000.0)
    true.advance(10)
    assert steady() == system()
    system.stepped_s = 2 * HOUR_S
    with capture_logs() as logs:
        assert steady.step() == 2 * HOUR_S
        assert steady.step() == 0.0  # re-anchored: said once
    assert steady() == true()  # its own time did not move
    assert [(e["event"], e["step_s"]) for e in logs] == [("clock.stepped", 2 * HOUR_S)]
    system.stepped_s += CLOCK_STEP_S / 2  # a small correction is no step
    assert steady.step() == 0.0
    system.stepped_s -= 600 + CLOCK_STEP_S / 2
    assert steady.step() == -600


@pytest.mark.parametrize("kind", ["steady", "system"])
def test_six_hours_with_the_clock_stepped_forward_and_back_cost_no_session(kind: str) -> None:
    """Six simulated hours of 80-minute tokens; at 1 h the host's clock jumps 2 h forward, at
    3 h it goes back 2 h 10 min. On the daemon's SteadyClock every token stays live and no
    login opens a second session; on the system clock itself (the control) the forward step
    makes the tokens look dead and each login logs in again."""
    true = FakeClock(1_800_000_000.0)
    system = SystemClock(true)
    steady = SteadyClock(wall=system, monotonic=lambda: true() - 1_800_000_000.0)
    clock = steady if kind == "steady" else system
    fake = FakeTradovate([user("APEX_1"), user("APEX_2")], clock=true)
    with tradovate_routes(fake):
        settings = settings_for(fake, ORCA_TOKEN_PROBE_INTERVAL="3600")
        metrics = Metrics()
        client = TradovateClient(settings.tradovate, metrics=metrics, clock=clock)
        store = fakeredis.FakeRedis(decode_responses=True)
        refresher = build_refreshing(
            settings,
            client,
            store,
            metrics=metrics,
            instance="t",
            clock=clock,
            rng=random.Random(1),
        ).refresher
        names = ("APEX_1", "APEX_2")
        dead_samples, minute = 0, 0
        steps: list[float] = []

        def each_minute() -> None:
            nonlocal dead_samples, minute
            if minute == 60:
                system.stepped_s = 2 * HOUR_S
            if minute == 180:
                system.stepped_s = -600
            if step := steady.step():
                steps.append(step)
            if kind == "steady":
                tokens = [store.get(f"token:{name}") for name in names]
                dead_samples += sum(1 for t in tokens if not (t and fake.is_live(str(t))))
            minute += 1

        # The logins' jobs on the true time; the host's clock steps under the daemon's.
        jobs = refresher_jobs(refresher, true)
        jobs.add_housekeeping({"minute": (each_minute, 60)})
        jobs.run_for(6 * HOUR_S - 1)
    assert steps == [2 * HOUR_S, -2 * HOUR_S - 600]
    if kind == "system":  # measured: 6 sessions each
        assert min(fake.seen.sessions_opened[name] for name in names) >= 2
        return
    assert dict(fake.seen.sessions_opened) == dict.fromkeys(names, 1)
    assert dead_samples == 0
    assert min(fake.seen.renewals[name] for name in names) >= 4  # renewed all along


def test_a_step_back_does_not_hold_the_scheduler_and_a_step_forward_does_not_rush_it() -> None:
    jobs = JobRunner(2, threading.Event(), [])
    ran = threading.Event()
    now = datetime.now(UTC)
    # What a 10-minute step back does to a job due in a second: it is due in 10 min 1 s.
    jobs.scheduler.add_job(ran.set, id="due-soon", next_run_time=now + timedelta(seconds=601))
    jobs.scheduler.add_job(ran.set, id="later", next_run_time=now + timedelta(seconds=1_000))
    jobs.start()
    try:
        jobs.shift(-600)
        assert ran.wait(5), "the job due in a second before the step did not run"
        assert jobs.scheduler.get_job("later") is not None  # not rushed by the step back
        jobs.shift(2 * HOUR_S)  # forward: it keeps its delay instead of running at once
        later = jobs.scheduler.get_job("later")
        assert later is not None
        assert later.next_run_time - datetime.now(UTC) > timedelta(seconds=2 * HOUR_S + 300)
    finally:
        jobs.shutdown()
