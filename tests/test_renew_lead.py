"""The group's renewal lead said where people look: `budget.capacity` (and through Redis
`status` and `check`), `/metrics`, `doctor`; and a renewal that fails at the floor is tried
again while its key lives."""

from __future__ import annotations

import time

import fakeredis

from daemon.cli.doctor import run_doctor
from daemon.config import Login, Secret
from daemon.outcomes import Outcome
from daemon.refresh.build import Refreshing
from daemon.refresh.policy import Policy
from daemon.refresh.progress import LoginProgress
from daemon.sim.tradovate import FakeTradovate, numbered_desk
from daemon.store.budget import AddressBudget
from daemon.store.heartbeat import Heartbeat, write_heartbeat
from daemon.store.tokens import TokenSet, write_login_tokens
from daemon.tradovate import TokenGrant
from daemon.views.check import check_report
from daemon.views.status import render_status, status_report
from tests.helpers import FakeClock, daemon_env, make_jwt, refreshing_for, settings_for


def twenty_logins(clock: FakeClock) -> Refreshing:
    fake = FakeTradovate(numbered_desk(20, 1), clock=clock, token_lifetime_s=4_800)
    return refreshing_for(settings_for(fake), clock)


def test_budget_capacity_says_the_lead_what_it_keeps_and_who_is_beyond() -> None:
    clock = FakeClock()
    refreshing = twenty_logins(clock)
    report = refreshing.capacity.report(clock.now)
    assert report.short
    assert report.keeps_alive == report.keeps_alive_at_floor == 17
    assert report.beyond == ["LOGIN_0017", "LOGIN_0018", "LOGIN_0019"]
    assert report.renew_lead_floor_s == 300
    assert 300 <= report.renew_lead_s < 900
    assert refreshing.capacity.configured() == (14, 17)  # heartbeats: at the floor


def test_status_says_each_groups_lead_and_the_logins_beyond_it() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    clock = FakeClock(time.time())
    refreshing = twenty_logins(clock)
    capacity = refreshing.capacity.report(clock.now)
    budget = AddressBudget(client, "default", {"renew": 15, "login_failure": 5}, window_s=3_600)
    budget.publish_capacity(capacity.as_dict(), 60)
    write_heartbeat(client, Heartbeat("host:1:aaaa", 1, None, clock.now, 20, owned=20, protocol=2))
    text = render_status(status_report(client, [f"LOGIN_{n:04}" for n in range(20)], now=clock.now))
    assert f"renewing {capacity.renew_lead_s / 60:.1f} min before expiry" in text
    assert "SHORT, it keeps about 17 logins alive by renewal (17 at the floor of 5.0 min)" in text
    assert "beyond it: LOGIN_0017, LOGIN_0018, LOGIN_0019" in text


def test_check_and_status_mark_expiring_only_past_the_published_lead() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    now = time.time()
    token = make_jwt(now + 400, sub="APEX_1")
    write_login_tokens(
        client,
        TokenSet("APEX_1", token, now + 400, 4_800.0),
        now=now,
        max_ttl_s=18_000,
    )

    def state() -> str:
        report = check_report(client, ["APEX_1"], target="fake", now=now)
        in_status = status_report(client, ["APEX_1"], now=now).logins[0].token
        assert str(in_status) == report["tokens"][0]["state"]
        return str(in_status)

    assert state() == "expiring"  # 400 s left: past the advice's 15 minutes
    budget = AddressBudget(client, "g", {"renew": 15, "login_failure": 5}, window_s=3_600)
    budget.publish_capacity({"group": "g", "renew_lead_s": 300.0}, 60)
    assert state() == "valid"  # renewed at the floor: 5 minutes before expiry


def test_doctor_says_the_later_lead_and_the_logins_beyond_it() -> None:
    fake = FakeTradovate(numbered_desk(20, 1))
    env = {**daemon_env(fake), "REDIS_URL": "redis://127.0.0.1:1/0"}
    report = run_doctor(env, {})
    budget = next(f for f in report.findings if f.topic == "budget")
    assert budget.level == "warning"
    assert "short at the advice's 15 minutes, so renewals move later" in budget.text
    assert "keeps about 17 alive by renewal, 17 at the floor of 5.0 min" in budget.text
    assert "beyond it: LOGIN_0017, LOGIN_0018, LOGIN_0019" in budget.text
    fewer = run_doctor({**env, "ORCA_ACCOUNTS": ",".join(f"LOGIN_{n:04}" for n in range(15))}, {})
    assert next(f for f in fewer.findings if f.topic == "budget").level == "ok"


def test_a_renewal_that_fails_at_the_floor_is_tried_again_while_its_key_lives() -> None:
    policy = Policy()
    now = 1_800_000_000.0
    state = LoginProgress(Login("APEX_1", Secret("pw")), failures=9)  # back-off 150-300 s
    state.grant = TokenGrant("t", now + 300, now - 4_500, Outcome.LOGIN)
    delay = policy.delay_after_failure(Outcome.UNAVAILABLE, state, now, captcha_park_s=3_600)
    assert delay <= (300 - 60) / 2  # halfway to the key's expiry, 60 s before the token's
    state.grant = TokenGrant("t", now + 4_000, now - 800, Outcome.LOGIN)
    assert policy.delay_after_failure(Outcome.UNAVAILABLE, state, now, captcha_park_s=3_600) >= 150
