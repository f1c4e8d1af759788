"""Living within Tradovate's per-address budgets, over simulated hours: an injected clock drives
the refresher and the simulator (which answers penalty tickets past the budgets), no wall time."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.config import Login, password_variable
from daemon.refresh.capacity import Capacity
from daemon.refresh.refresher import Refresher
from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import LOGIN_PATH, RENEW_PATH, FakeTradovate, numbered_desk
from daemon.store.budget import RENEW
from tests.helpers import (
    FakeClock,
    Run,
    Spawned,
    daemon_env,
    refresher_for,
    refreshing_for,
    settings_for,
    tradovate_routes,
)

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
    """Each login's attempt when it said the next is due, in time order, until `hours` pass."""
    due = dict.fromkeys(refresher.states, clock.now)
    end = clock.now + hours * HOUR_S
    while (name := min(due, key=lambda n: due[n])) and due[name] <= end:
        clock.now = max(clock.now, due[name])
        attempt = refresher.refresh(name)
        due[name] = clock.now + max(attempt.delay_s, 0.5)
        check()


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


def test_20_logins_say_the_shortfall_keep_relogin_ones_and_alert_for_wait_ones() -> None:
    clock = FakeClock()
    refresher, fake, capacities = build(20, clock, relogin=6)
    alerts: list[str] = []
    refresher.reporter.alerts = type("Sink", (), {"send": staticmethod(alerts.append)})()
    redis = refresher.keeper.redis
    relogin = [n for n, s in refresher.states.items() if s.login.when_budget_short == "relogin"]
    capacity = capacities.report(clock.now)
    assert capacity.short is True
    assert capacity.renew_needed > capacity.renew_usable
    assert capacity.keeps_alive < 20

    started = clock.now

    def relogin_ones_live() -> None:
        if clock.now > started + 10 * 60:  # after the first logins, paced at 10 a minute
            for name in relogin:
                assert fake.is_live(str(redis.get(f"token:{name}"))), (name, clock.now)

    with tradovate_routes(fake), capture_logs() as logs:
        simulate(refresher, clock, 4, relogin_ones_live)
    assert sum(fake.seen.penalties.values()) == 0
    assert most_in_any_window(fake.seen.renewal_times) <= 15
    short = [e for e in logs if e["event"] == "budget.short"]
    assert short, "the wait logins were not said to be short"
    assert all(e["login"] not in relogin for e in short)
    assert alerts
    assert all("renewals are spent" in a for a in alerts)
    relogged = [e for e in logs if e["event"] == "budget.relogin"]
    assert relogged
    assert {e["login"] for e in relogged} <= set(relogin)
    lapsed = {e["login"] for e in short}
    # No session opened only to lapse again: a lapsed `wait` login logs in again only when the
    # budget has room for its renewals, and then keeps that session.
    again = [name for name in lapsed if fake.seen.sessions_opened[name] > 1]
    assert len(again) < len(lapsed) / 2, again
    assert all(fake.is_live(str(redis.get(f"token:{name}"))) for name in again)


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
