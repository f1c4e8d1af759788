"""Living within Tradovate's per-address budgets, over simulated hours: an injected clock drives
the refresher and the simulator (which answers penalty tickets past the budgets), no wall time."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.config import Login, password_variable
from daemon.refresh.capacity import Capacity
from daemon.refresh.refresher import Refresher
from daemon.sim.environment import wait_for
from daemon.sim.observe import TokenSampler, all_live
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import LOGIN_PATH, RENEW_PATH, FakeTradovate, numbered_desk
from daemon.store.budget import RENEW
from tests.helpers import (
    FakeClock,
    Run,
    Spawned,
    StartDaemon,
    daemon_env,
    refresher_for,
    refreshing_for,
    settings_for,
    tradovate_routes,
)
from tests.virtual_jobs import VirtualJobs, virtual_desk

HOUR_S = 3_600.0


def build(
    logins: int, clock: FakeClock, *, relogin: int = 0
) -> tuple[Refresher, FakeTradovate, Capacity]:
    fake = FakeTradovate(numbered_desk(logins, 1), clock=clock, token_lifetime_s=4_800)
    settings = settings_for(fake, ORCA_TOKEN_PROBE_INTERVAL="3600")
    marked = tuple(
        Login(login.name, login.password, "relogin" if n < relogin else "wait")
        for n, login in enumerate(settings.logins)
    )
    settings = type(settings)(**{**settings.__dict__, "logins": marked})
    refreshing = refreshing_for(settings, clock, rng=random.Random(7))
    return refreshing.refresher, fake, refreshing.capacity


def simulate(
    refresher: Refresher, clock: FakeClock, hours: float, check: Callable[[], None]
) -> None:
    """Each login's attempt when it said the next is due (`VirtualJobs`), until `hours` pass;
    `check()` after each attempt."""

    def checked(name: str) -> float:
        delay_s = refresher.refresh(name).delay_s
        check()
        return max(delay_s, 0.5)

    jobs = VirtualJobs(clock)
    jobs.add_logins(list(refresher.states), checked, backstop_s=HOUR_S)
    jobs.run_for(hours * HOUR_S)


def most_in_any_window(times: list[float], window_s: float = HOUR_S) -> int:
    ordered = sorted(times)
    return max((sum(1 for t in ordered[i:] if t < start + window_s) for i, start in
                enumerate(ordered)), default=0)  # fmt: skip


def test_12_logins_on_one_address_live_6_hours_without_a_penalty() -> None:
    clock = FakeClock()
    refresher, fake, capacities = build(12, clock)
    redis = refresher.keeper.redis
    names = list(refresher.states)

    def every_token_live() -> None:
        if all(redis.get(f"token:{n}") for n in names):  # once every login has logged in
            for name in names:
                assert fake.is_live(str(redis.get(f"token:{name}"))), (name, clock.now)

    with tradovate_routes(fake):
        assert capacities.report(clock.now).short is False
        simulate(refresher, clock, 6, every_token_live)
    assert sum(fake.seen.penalties.values()) == 0
    assert set(fake.seen.sessions_opened.values()) == {1}  # renewed, never logged in again
    assert most_in_any_window(fake.seen.renewal_times) <= 15
    assert min(fake.seen.renewals.values()) >= 5  # each login renewed about hourly


def test_20_logins_say_the_shortfall_and_the_relogin_ones_take_it() -> None:
    """20 logins, 6 of them `relogin`: renewing later keeps 17 alive by renewal; the 3 beyond
    are the last `relogin` ones, which log in again, so every login stays live and no `wait`
    one is short."""
    clock = FakeClock()
    refresher, fake, capacities = build(20, clock, relogin=6)
    alerts: list[str] = []
    refresher.reporter.alerts = type("Sink", (), {"send": staticmethod(alerts.append)})()
    redis = refresher.keeper.redis
    relogin = [n for n, s in refresher.states.items() if s.login.when_budget_short == "relogin"]
    capacity = capacities.report(clock.now)
    assert capacity.short is True
    assert capacity.renew_needed > capacity.renew_usable
    assert (capacity.keeps_alive, capacity.keeps_alive_at_floor) == (17, 17)
    assert capacity.beyond == relogin[3:]
    assert 300 <= capacity.renew_lead_s < 900

    started = clock.now

    def every_login_live() -> None:
        if clock.now > started + 10 * 60:  # after the first logins, paced at 10 a minute
            for name in refresher.states:
                assert fake.is_live(str(redis.get(f"token:{name}"))), (name, clock.now)

    with tradovate_routes(fake), capture_logs() as logs:
        simulate(refresher, clock, 4, every_login_live)
    assert sum(fake.seen.penalties.values()) == 0
    assert most_in_any_window(fake.seen.renewal_times) <= 15
    assert not [e for e in logs if e["event"] == "budget.short"]
    assert not alerts
    relogged = {e["login"] for e in logs if e["event"] == "budget.relogin"}
    assert relogged == set(relogin[3:])
    assert all(fake.seen.sessions_opened[n] == 1 for n in refresher.states if n not in relogged)


def test_20_wait_logins_keep_17_alive_for_6_hours_at_a_later_lead() -> None:
    """Tradovate's 15 renewals an hour (14 usable) and 80-minute tokens: renewing at the
    advice's 15 minutes keeps 15 alive; the group's later lead keeps 17. The 3 beyond are the
    last in configuration order: said before they lapse, never logged in again."""
    clock = FakeClock()
    refresher, fake, capacities = build(20, clock)
    redis = refresher.keeper.redis
    names = list(refresher.states)
    beyond = names[17:]
    valid_counts: list[int] = []
    started = clock.now

    def count_valid() -> None:
        if clock.now > started + 10 * 60:
            tokens = [redis.get(f"token:{name}") for name in names[:17]]
            assert all(t and fake.is_live(str(t)) for t in tokens), clock.now
            valid_counts.append(sum(1 for n in names if fake.is_live(str(redis.get(f"token:{n}")))))

    with tradovate_routes(fake), capture_logs() as logs:
        simulate(refresher, clock, 6, count_valid)
    capacity = capacities.report(clock.now)
    assert capacity.beyond == beyond
    assert capacity.keeps_alive == 17
    assert min(valid_counts) >= 17
    assert sum(fake.seen.penalties.values()) == 0
    assert most_in_any_window(fake.seen.renewal_times) <= 15
    assert all(fake.seen.sessions_opened[name] == 1 for name in names)  # none beyond its first
    assert min(fake.seen.renewals[name] for name in names[:17]) >= 4
    assert all(fake.seen.renewals[name] == 0 for name in beyond)
    short = {e["login"]: e for e in logs if e["event"] == "budget.short"}
    assert set(short) == set(beyond)  # said, each before its token lapsed
    assert all(e["slot_in_s"] > 0 for e in short.values())


def test_a_wrong_password_costs_only_its_share_while_the_others_log_in() -> None:
    clock = FakeClock()
    fake = FakeTradovate(numbered_desk(6, 1), clock=clock)
    settings = settings_for(fake, **{password_variable("LOGIN_0000"): "not-the-password"})
    refresher = refresher_for(settings, clock)
    with tradovate_routes(fake):
        simulate(refresher, clock, 2, lambda: None)
    failed = fake.seen.failed_login_times
    assert 2 <= len(failed) <= 4  # 15 min, 30, 60 ... within its share
    assert most_in_any_window(failed) <= 2  # its share of the address's 5 (4 usable)
    assert sum(fake.seen.penalties.values()) == 0
    assert all(fake.seen.sessions_opened[u] == 1 for u in fake.users if u != "LOGIN_0000")


@pytest.mark.parametrize("path", [RENEW_PATH, LOGIN_PATH])
def test_the_simulator_answers_a_penalty_past_its_budget(path: str) -> None:
    clock = FakeClock()
    fake = FakeTradovate(numbered_desk(1, 1), clock=clock)
    with tradovate_routes(fake):
        if path == RENEW_PATH:
            _, answer = fake.answer("POST", LOGIN_PATH, fake_body(fake), None)
            token = answer["accessToken"]
            answers = [fake.answer("GET", RENEW_PATH, None, token) for _ in range(16)]
        else:
            bad = {**fake_body(fake), "password": "wrong"}
            answers = [fake.answer("POST", LOGIN_PATH, bad, None) for _ in range(6)]
    assert "p-ticket" in answers[-1][1]
    assert answers[-1][1]["p-time"] == 15
    assert fake.seen.penalties[path] == 1


def fake_body(fake: FakeTradovate) -> dict[str, object]:
    user = next(iter(fake.users.values()))
    return {"name": user.name, "password": user.password, "sec": fake.sec}


def test_a_desk_larger_than_one_address_says_so_at_start_and_in_status(
    redis_server: RedisServer,
    tmp_path: Path,
    processes: Spawned,
    cli: Callable[[dict[str, str]], Run],
) -> None:
    with FakeTradovate(numbered_desk(20, 1)) as fake:
        env = daemon_env(fake, redis_server.url, ORCA_AUTH_RATE_LIMIT="1000")
        daemon = processes.start(env, cwd=str(tmp_path))
        said = daemon.event("budget.capacity")
        assert said["level"] == "warning"
        assert said["short"] is True
        assert said["renew_needed"] > said["renew_usable"] == 14
        assert "another /24 subnet" in said["hint"]
        run = cli({"REDIS_URL": redis_server.url, "ORCA_ACCOUNTS": env["ORCA_ACCOUNTS"]})
        _, out, _ = wait_for(
            lambda: (r := run("status")) and "renewals: needed" in r[1] and r, what="status"
        )
        assert "may spend 14" in out
        assert "add an instance on another /24 subnet" in out


def test_when_renewals_run_short_the_earliest_expiry_asks_first() -> None:
    clock = FakeClock()
    refresher, fake, _ = build(3, clock)
    names = list(refresher.states)
    with tradovate_routes(fake):
        for name in reversed(names):  # the last logs in first: it expires first
            refresher.refresh(name)
            clock.advance(120)
        clock.advance(4_800 - 900)  # every one of them is due
        spent_at = clock.now - HOUR_S + 60  # the address's renewals are spent, a minute more
        for spent in range(refresher.budget.usable(RENEW)):
            assert refresher.budget.try_spend(RENEW, spent_at, who=f"other{spent}").ok
        delays = {name: refresher.refresh(name, force=True).delay_s for name in names}
    by_expiry = sorted(names, key=lambda n: refresher.states[n].grant.expires_at)  # type: ignore[union-attr]
    assert [delays[n] for n in by_expiry] == sorted(delays.values())
    assert delays[by_expiry[0]] == pytest.approx(60, abs=1)
    assert delays[by_expiry[1]] - delays[by_expiry[0]] == pytest.approx(2.0)
    assert delays[by_expiry[2]] - delays[by_expiry[1]] == pytest.approx(2.0)


def test_with_more_logins_than_renewals_the_same_ones_stay_alive() -> None:
    """30 logins, renewals for about 15: the renewals go to the same logins, which keep their
    one session for 5 hours, rather than to every login in turn."""
    clock = FakeClock()
    refresher, fake, _ = build(30, clock)
    with tradovate_routes(fake):
        simulate(refresher, clock, 5, lambda: None)
    kept = [name for name in refresher.states if fake.seen.sessions_opened[name] == 1]
    assert len(kept) >= 12, len(kept)
    assert sum(fake.seen.penalties.values()) == 0


@pytest.mark.soak
@pytest.mark.timeout(480)
def test_20_logins_on_one_group_keep_17_alive_for_6_hours_of_the_time_scaled_simulator(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """A real daemon against the simulator's budgets on a 60 s "hour" (80-minute tokens live
    80 s; a 5 s floor, a 1 s key margin): 6 hours in 6 minutes. The 17 kept are valid in every
    sample, at a lead the group's renewals fit; the last 3 lapse and never log in again; no
    penalty ticket."""
    with FakeTradovate(numbered_desk(20, 1), token_lifetime_s=80) as fake:
        names = list(fake.users)
        kept, beyond = names[:17], names[17:]
        env = daemon_env(fake, redis_server.url, ORCA_AUTH_RATE_LIMIT="100000")
        daemon = start_daemon(env)
        client = redis_server.client()
        wait_for(lambda: all_live(client, names, fake), what="every login's first token")
        sampler = TokenSampler(redis_server.client, kept, fake.is_live, every_s=0.25).start()
        six_hours_s = 6 * fake.budget_window_s
        deadline = time.monotonic() + six_hours_s
        wait_for(lambda: time.monotonic() > deadline, timeout=six_hours_s + 5, what="6 hours")
        samples = sampler.stop()
        capacity = daemon.event("budget.capacity")
    assert samples.taken > 1_000
    assert (samples.stale, samples.missing, samples.unreadable) == (0, 0, 0)
    assert sum(fake.seen.penalties.values()) == 0
    assert all(fake.seen.sessions_opened[name] == 1 for name in names)
    assert all(fake.seen.renewals[name] >= 4 for name in kept)
    assert all(fake.seen.renewals[name] == 0 for name in beyond)
    assert capacity["beyond"] == beyond
    assert capacity["keeps_alive"] == 17
    said = [e for e in daemon.events() if e.get("event") == "budget.short"]
    assert {e["login"] for e in said} == set(beyond)


def test_20_logins_keep_17_alive_for_6_hours_through_the_whole_daemon_on_virtual_time() -> None:
    """The real `Daemon` (membership rounds, leases, requests, renewals, account checks,
    reconcile) on virtual time against the simulator's budgets on a 60 s "hour" (80-minute
    tokens live 80 s; a 5 s floor, a 1 s key margin): 6 hours in seconds. The 17 kept are valid
    in every 0.25 s sample, at a lead the group's renewals fit; the last 3 lapse and never log
    in again; no penalty ticket. (`make soak` runs the same with a daemon process, in real
    time.)"""
    clock = FakeClock(1_800_000_000.0)
    fake = FakeTradovate(numbered_desk(20, 1), token_lifetime_s=80, clock=clock)
    names = list(fake.users)
    kept, beyond = names[:17], names[17:]
    samples = {"taken": 0, "invalid": 0}
    with (
        capture_logs() as logs,
        virtual_desk(fake, clock, ORCA_AUTH_RATE_LIMIT="100000") as desk,
    ):
        desk.jobs.run_for(10)
        assert all(desk.key_valid(name) for name in names), "every login's first token"

        def sample() -> None:
            samples["taken"] += 1
            samples["invalid"] += sum(1 for name in kept if not desk.key_valid(name))

        desk.jobs.add_housekeeping({"sample": (sample, 0.25)})
        desk.jobs.run_for(6 * fake.budget_window_s)
    assert samples["taken"] > 1_000
    assert samples["invalid"] == 0
    assert sum(fake.seen.penalties.values()) == 0
    assert all(fake.seen.sessions_opened[name] == 1 for name in names)
    assert all(fake.seen.renewals[name] >= 4 for name in kept)
    assert all(fake.seen.renewals[name] == 0 for name in beyond)
    capacity = [e for e in logs if e["event"] == "budget.capacity"][-1]
    assert capacity["beyond"] == beyond
    assert capacity["keeps_alive"] == 17
    assert {e["login"] for e in logs if e["event"] == "budget.short"} == set(beyond)
