"""Building a refresher and its collaborators from the settings, in one place: the policy, the
leads (whether ORCA_REFRESH_INTERVAL fits is decided here, before they exist), the schedule, the
pacer, the group's budget, the keeper and the reporter."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis

from daemon.config import Settings
from daemon.constants import (
    ASSUMED_TOKEN_LIFETIME_S,
    FRESH_TOKEN_S,
    LOCKOUT_S,
    SHARED_RENEW_BLOCK_S,
)
from daemon.metrics import Metrics
from daemon.refresh.accounts import AccountsCheck
from daemon.refresh.adoption import Adoption
from daemon.refresh.capacity import Capacity
from daemon.refresh.keeper import RedisKeeper
from daemon.refresh.policy import Policy
from daemon.refresh.progress import LoginProgress
from daemon.refresh.refresher import Refresher
from daemon.refresh.reporter import Reporter
from daemon.refresh.schedule import Leads, RenewalSchedule, interval_fits
from daemon.refresh.signin import SignIn
from daemon.sinks.alerts import Alerter
from daemon.sinks.audit import AuditRecorder
from daemon.store.budget import LOGIN_FAILURE, RENEW, AddressBudget
from daemon.store.health import RedisHealth
from daemon.store.lease import Holding
from daemon.timescale import TimeScale
from daemon.tradovate import AuthPacer, TradovateClient


@dataclass(frozen=True)
class Refreshing:
    """A refresher, and what the service asks beside it: the adoption of what Redis holds for
    logins it takes, the keeper (reconcile) and the capacity (budget reports, heartbeats)."""

    refresher: Refresher
    adoption: Adoption
    keeper: RedisKeeper
    capacity: Capacity


def build_refreshing(
    settings: Settings,
    tradovate: TradovateClient,
    redis_client: redis.Redis,
    *,
    metrics: Metrics,
    instance: str,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    redis_health: RedisHealth | None = None,
    alerts: Alerter | None = None,
    audit: AuditRecorder | None = None,
    holdings: Mapping[str, Holding] | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    stopping: threading.Event | None = None,
) -> Refreshing:
    """`holdings`: the leases this instance holds (`LoginLeases.holdings`), certain until
    their deadline on `monotonic`, whose fences every write carries (None: no leases, every
    login is this instance's, writes unfenced)."""
    stopping = stopping or threading.Event()

    def may_act(login: str) -> bool:
        """This instance holds the login's lease, certainly, and no stop began."""
        if stopping.is_set():
            return False
        held = None if holdings is None else holdings.get(login)
        return holdings is None or (held is not None and monotonic() < held.valid_until)

    window_s = settings.budget_window_s
    scale = TimeScale(window_s)  # Tradovate's durations, on the budget window's clock
    captcha_park_s = scale.of(settings.captcha_park_s)
    longest_park_s = max(scale.of(LOCKOUT_S), captcha_park_s)
    budget = AddressBudget(
        redis_client,
        settings.budget_group,
        {
            RENEW: settings.renew_budget_per_hour,
            LOGIN_FAILURE: settings.login_failure_budget_per_hour,
        },
        window_s=window_s,
        longest_block_s={
            RENEW: scale.of(SHARED_RENEW_BLOCK_S),
            LOGIN_FAILURE: longest_park_s,
        },
    )
    policy = Policy(account_check_interval_s=settings.token_probe_interval_s, window_s=window_s)
    leads = Leads(
        settings.refresh_interval_s,
        rng,
        interval_fits=interval_fits(
            settings.refresh_interval_s,
            len(settings.logins),
            ASSUMED_TOKEN_LIFETIME_S,
            window_s,
            budget.usable(RENEW),
        ),
        window_s=window_s,
        lead_floor_s=settings.renew_lead_floor_s,
    )
    states = {login.name: LoginProgress(login) for login in settings.logins}
    schedule = RenewalSchedule(states, leads, budget.usable(RENEW), holdings=holdings)
    keeper = RedisKeeper(
        redis_client,
        states,
        window_s=window_s,
        max_ttl_s=settings.token_ttl_s,
        instance=instance,
        clock=clock,
        may_act=may_act,
        holdings=holdings,
        monotonic=monotonic,
    )
    reporter = Reporter(metrics, instance=instance, clock=clock, alerts=alerts, audit=audit)
    refresher = Refresher(
        states,
        tradovate,
        policy=policy,
        sign_in=SignIn(tradovate, AuthPacer(settings.auth_rate_limit, clock=clock), budget, clock),
        budget=budget,
        accounts=AccountsCheck(tradovate, fresh_token_s=scale.of(FRESH_TOKEN_S)),
        schedule=schedule,
        keeper=keeper,
        reporter=reporter,
        redis_health=redis_health
        or RedisHealth(settings.redis.target(), metrics, settings.redis.credentials_from()),
        captcha_park_s=captcha_park_s,
        clock=clock,
        holdings=holdings,
        monotonic=monotonic,
        stopping=stopping,
    )
    adoption = Adoption(
        redis_client, states, policy, leads, clock=clock, longest_park_s=longest_park_s
    )
    return Refreshing(refresher, adoption, keeper, Capacity(budget, schedule))
