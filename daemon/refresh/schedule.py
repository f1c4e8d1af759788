"""When each login is renewed, for the group's budget: Tradovate's advice (about 15 minutes
before expiry, jittered) while the group's renewals fit it; when they do not, one later lead for
the group, just enough to fit, down to ORCA_RENEW_LEAD_FLOOR, with the renewals paced a window's
share apart (earliest expiry first) so that tokens issued together never ask at once. What the
floor cannot keep alive is a stable set, `relogin` logins first, then the last in configuration
order: they are not renewed (a `relogin` one logs in again at its advised time, a `wait` one is
said to lapse), so a renewal never goes to them at the cost of a kept login.

`Leads` says when one token is renewed (the advice, jittered; the floor; the stagger) and
`plan_renewals` plans the group, both pure. `RenewalSchedule` is the one owner of the group's
state as this instance sees it: the latest plan (when each owned login renews, which are beyond
the budget) and the group's renewal stop (a penalty ticket or a captcha on a renewal), replaced
under a lock of its own. A login's job reads the latest plan to decide, and replans once, when it
settles; it changes only its own progress: no job writes another's.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from daemon.constants import (
    ASSUMED_TOKEN_LIFETIME_S,
    BUDGET_STAGGER_S,
    BUDGET_WINDOW_S,
    RENEW_BEFORE_EXPIRY_FRACTION,
    RENEW_BEFORE_EXPIRY_S,
    RENEW_JITTER_LIFETIME_FRACTION,
    RENEW_LEAD_FLOOR_S,
    RENEW_SLACK_MIN_S,
    RENEW_SLACK_S,
)
from daemon.refresh.progress import LoginProgress
from daemon.store.lease import Holding
from daemon.timescale import TimeScale, key_margin_s
from daemon.tradovate import TokenGrant


def assumed_lifetime_s(window_s: float) -> float:
    """80 minutes of Tradovate's hour, on the budget window's time-scale."""
    return TimeScale(window_s).of(ASSUMED_TOKEN_LIFETIME_S)


class Leads:
    """How long before expiry a token is renewed, on the budget window's time-scale."""

    def __init__(
        self,
        refresh_interval_s: float,
        rng: random.Random | None = None,
        *,
        interval_fits: bool = True,
        window_s: float = BUDGET_WINDOW_S,
        lead_floor_s: float = RENEW_LEAD_FLOOR_S,
    ) -> None:
        """`interval_fits`: renewing every login at `refresh_interval_s` fits the budget
        (`interval_fits` below). `lead_floor_s`: ORCA_RENEW_LEAD_FLOOR, in Tradovate's time."""
        self.window_s = window_s
        self.refresh_interval_s = refresh_interval_s
        self.interval_fits = interval_fits
        self._lead_floor_s = lead_floor_s
        self._rng = rng or random.Random()
        scale = TimeScale(window_s)
        self.stagger_s = scale.of(BUDGET_STAGGER_S)  # between renewals waiting for one slot
        self._scaled_floor_s = scale.of(lead_floor_s)

    def renew_at(self, grant: TokenGrant) -> float:
        """Tradovate's advice: about 15 minutes before expiry (the same share of a shorter
        life), jittered so that logins spread over the hour. ORCA_REFRESH_INTERVAL is a target,
        honoured (sooner) only while the address's renewal budget allows it for every login."""
        lifetime = max(grant.lifetime_s, 1.0)
        before = self.renew_before_expiry_s(lifetime)
        jitter = lifetime * self._rng.uniform(
            -RENEW_JITTER_LIFETIME_FRACTION, RENEW_JITTER_LIFETIME_FRACTION
        )
        due = grant.expires_at - before + jitter
        if self.interval_fits:
            due = min(due, grant.issued_at + self.refresh_interval_s)
        return due

    def renew_before_expiry_s(self, lifetime_s: float) -> float:
        return renew_before_expiry_s(lifetime_s, self.window_s)

    def lead_floor_s(self, lifetime_s: float) -> float:
        """ORCA_RENEW_LEAD_FLOOR on the budget window's time-scale, but never so late that
        the renewal could land after the token's key has expired."""
        return max(self._scaled_floor_s, _latest_lead_s(lifetime_s, self.window_s))

    def key_margin_s(self, lifetime_s: float) -> float:
        return key_margin_s(lifetime_s, self.window_s)


@dataclass(frozen=True)
class RenewalCapacity:
    """Renewals `logins` need in one budget window, each renewed every `period_s`, against the
    `usable` renewals the address may spend there. One computation for the daemon (whether
    ORCA_REFRESH_INTERVAL fits, `budget.capacity`) and for `doctor`'s estimate."""

    logins: int
    period_s: float
    window_s: float
    usable: float

    @property
    def needed(self) -> float:
        return self.logins * self.window_s / max(self.period_s, 1.0)

    @property
    def short(self) -> bool:
        return self.needed > self.usable + 1e-9


def keeps_alive(usable: float, period_s: float, window_s: float) -> int:
    """How many logins `usable` renewals a window keep alive, each renewed every `period_s`."""
    return int(usable * max(period_s, 0.0) / window_s + 1e-9)


def interval_fits(
    refresh_interval_s: float, logins: int, lifetime_s: float, window_s: float, usable: int
) -> bool:
    """Whether renewing `logins` every `refresh_interval_s` (or sooner, as the advice asks)
    stays within the `usable` renewals of a window: ORCA_REFRESH_INTERVAL is honoured only then."""
    period = lifetime_s - renew_before_expiry_s(lifetime_s, window_s)
    return not RenewalCapacity(logins, min(period, refresh_interval_s), window_s, usable).short


def renew_before_expiry_s(lifetime_s: float, window_s: float = BUDGET_WINDOW_S) -> float:
    """15 minutes (the same share of a shorter simulated life), but never later than
    `_latest_lead_s`."""
    scaled = TimeScale(window_s).of(RENEW_BEFORE_EXPIRY_S)
    advice = min(scaled, lifetime_s * RENEW_BEFORE_EXPIRY_FRACTION)
    return max(advice, _latest_lead_s(lifetime_s, window_s))


def _latest_lead_s(lifetime_s: float, window_s: float) -> float:
    """A renewal lands before the token's key expires (its TTL ends a margin before the token
    does, on the window's time-scale), with a scheduler's slack (time-scaled too, but never
    under what a scheduler running late in real time needs)."""
    slack_s = TimeScale(window_s).of(RENEW_SLACK_S, at_least_s=RENEW_SLACK_MIN_S)
    return key_margin_s(lifetime_s, window_s) + slack_s


@dataclass(frozen=True)
class RenewalPlan:
    lead_s: float  # how long before expiry the group renews (the advice while it fits)
    floor_s: float  # the latest lead, on the budget window's time-scale
    short: bool  # the advice's lead does not fit the budget
    keeps_alive: int  # logins the group's budget keeps alive at `lead_s` ...
    keeps_alive_at_floor: int  # ... and at `floor_s`
    needed: float  # renewals a window all of this instance's logins would need at `lead_s`
    beyond: tuple[str, ...] = ()  # this instance's logins beyond what the budget keeps alive
    renew_at: Mapping[str, float] = field(default_factory=dict)
    relogin_lead_s: float = 0.0  # a `relogin` login whose renewal slot frees later logs in
    stagger_s: float = 0.0  # between renewals waiting for the same freed slot


NO_PLAN = RenewalPlan(
    lead_s=0.0, floor_s=0.0, short=False, keeps_alive=0, keeps_alive_at_floor=0, needed=0.0
)


def plan_renewals(
    logins: Sequence[LoginProgress],
    now: float,
    *,
    lifetime_s: float,
    usable: int,
    share: float,
    leads: Leads,
    advised: Mapping[str, float] | None = None,
    spent: Sequence[float] = (),
) -> RenewalPlan:
    """`logins`: those this instance owns, in configuration order; `usable`: the group's
    renewals a window; `share`: this instance's part of the group's logins (its part of the
    budget); `advised`: advised renewal times newer than the logins' progress holds; `spent`:
    when the spends the group's window holds were made, whoever made them. Every renewal is
    planned where the window has a slot for it: one that would find none before its key
    expires is beyond, as are the logins the budget's pace cannot keep."""
    window_s = leads.window_s
    advised = {s.name: s.advised_renew_at for s in logins} | dict(advised or {})
    advice_s = leads.renew_before_expiry_s(lifetime_s)
    floor_s = min(leads.lead_floor_s(lifetime_s), advice_s)
    mine = usable * share
    hopeful = [state for state in logins if _may_hold_a_token(state, now)]
    at_advice = RenewalCapacity(len(hopeful), lifetime_s - advice_s, window_s, mine)
    order = {state.name: n for n, state in enumerate(logins)}
    slots = _Slots(spent, now, window_s, usable, leads.stagger_s)
    lead_s, beyond = advice_s, []
    renew_at = {s.name: advised[s.name] for s in hopeful if s.grant is not None}
    hard_s = leads.key_margin_s(lifetime_s)  # a renewal after this finds the key gone
    latest = _latest(hopeful, now, lifetime_s, hard_s)
    renew_at, late = slots.fit(renew_at, latest)
    if at_advice.short or late:  # late: the window holds spends, or tokens came together
        ranked = sorted(
            hopeful, key=lambda s: (s.login.when_budget_short == "relogin", order[s.name])
        )
        # A window's share apart, and a stagger: the spend a window ago has surely left it.
        pace_s = window_s / max(mine, 1e-9) + leads.stagger_s
        kept_count = min(len(ranked), int((lifetime_s - floor_s) / pace_s))
        while True:  # fewer kept until each renewal finds a slot before its key expires
            kept = ranked[:kept_count]
            lead_s = min(advice_s, max(floor_s, lifetime_s - kept_count * pace_s))
            paced = _paced(kept, now, lifetime_s, lead_s, pace_s)
            renew_at, late = slots.fit(paced, latest)
            if not late:
                break
            kept_count -= len(late)
        beyond = ranked[kept_count:]
    renew_at |= {s.name: advised[s.name] for s in logins if s.grant and s.name not in renew_at}
    return RenewalPlan(
        lead_s=lead_s,
        floor_s=floor_s,
        short=at_advice.short,
        keeps_alive=keeps_alive(usable, lifetime_s - lead_s, window_s),
        keeps_alive_at_floor=keeps_alive(usable, lifetime_s - floor_s, window_s),
        needed=len(hopeful) * window_s / max(lifetime_s - lead_s, 1.0),
        beyond=tuple(s.name for s in sorted(beyond, key=lambda s: order[s.name])),
        renew_at=renew_at,
        relogin_lead_s=leads.lead_floor_s(lifetime_s),
        stagger_s=leads.stagger_s,
    )


def _latest(
    logins: Sequence[LoginProgress], now: float, lifetime_s: float, hard_s: float
) -> dict[str, float]:
    """The latest time each login's renewal may land: before its key expires (`hard_s` before
    the token; a token to come lives from now). The floor, and the slack kept before the key's
    expiry, are where the plan aims, not where a token dies: a renewal a little past them still
    keeps the login, and a login judged late is left to lapse."""
    return {s.name: (s.grant.expires_at if s.grant else now + lifetime_s) - hard_s for s in logins}


class _Slots:
    """The group's window as the plan fills it: the spends it holds, then each renewal planned,
    in time order."""

    def __init__(
        self, spent: Sequence[float], now: float, window_s: float, usable: int, stagger_s: float
    ) -> None:
        self._spent = sorted(at for at in spent if at > now - window_s)
        self._now, self._window_s, self._usable, self._stagger_s = now, window_s, usable, stagger_s

    def fit(
        self, wanted: Mapping[str, float], latest: Mapping[str, float]
    ) -> tuple[dict[str, float], list[str]]:
        """Each renewal at its wanted time, or later (in the same order) when the window is
        full then, or a stagger after the one before: tokens issued together never ask at once.
        Those that would land after their `latest` (and after now: a token past its floor still
        renews at once where a slot is free) are returned apart."""
        taken, fitted, late = list(self._spent), {}, []  # sorted: each renewal is the latest
        earliest = self._now
        for name, wanted_at in sorted(wanted.items(), key=lambda item: (item[1], item[0])):
            at = max(earliest, wanted_at)
            inside = len(taken) - bisect.bisect_right(taken, at - self._window_s)
            if inside >= self._usable:  # a slot frees when the oldest too many have left
                at = taken[len(taken) - self._usable] + self._window_s + self._stagger_s
            if at > max(latest[name], self._now):
                late.append(name)
                continue
            fitted[name] = at
            taken.append(at)
            earliest = at + self._stagger_s
        return fitted, late


def _paced(
    kept: Sequence[LoginProgress], now: float, lifetime_s: float, lead_s: float, pace_s: float
) -> dict[str, float]:
    """Backwards from the latest expiry: each renewal a pace before the next one, never later
    than the lead. Logins without a token yet will hold one that lives from now on."""
    held = sorted(
        (s.grant.expires_at, s.name) for s in kept if s.grant and s.grant.expires_at > now
    )
    slots: list[tuple[float, str | None]] = [*held]
    slots += [(now + lifetime_s, None)] * (len(kept) - len(held))
    renew_at, following = {}, math.inf
    for expires_at, name in reversed(slots):
        following = min(expires_at - lead_s, following - pace_s)
        if name is not None:
            renew_at[name] = following
    return renew_at


def _may_hold_a_token(state: LoginProgress, now: float) -> bool:
    """Holds one, or may log in for one: not waiting on a park or the rejected ladder."""
    holds = state.grant is not None and state.grant.expires_at > now
    return holds or not (state.parked_until > now or state.not_before > now)


class RenewalSchedule:
    """The plan for the logins this instance owns, from their progress and the group's load,
    and the group's renewal stop. Both are replaced whole under one lock and read without it:
    `latest` is never changed once made, so a job reads one consistent plan."""

    def __init__(
        self,
        states: Mapping[str, LoginProgress],
        leads: Leads,
        usable: int,
        *,
        holdings: Mapping[str, Holding] | None = None,
    ) -> None:
        """`holdings`: the leases this instance holds (None: every login is its own)."""
        self._states = states
        # When the spends of the group's renewal window were made, as the latest renewal
        # attempt found them: every plan fits its renewals around them.
        self._spent: tuple[float, ...] = ()
        self.leads = leads
        self._usable = usable
        self._holdings = holdings
        # How many logins the instances of this budget group own together (their heartbeats;
        # 0: this instance alone), told by the membership round.
        self.group_logins = 0
        self._lock = threading.Lock()
        self.latest = NO_PLAN
        self.renewals_stopped_until = 0.0  # a penalty ticket or a captcha on a renewal

    def lifetime_s(self) -> float:
        """The shortest life of the tokens held (80 minutes before any)."""
        lives = [s.grant.lifetime_s for s in self._states.values() if s.grant is not None]
        return min(lives, default=assumed_lifetime_s(self.leads.window_s))

    def plan(self, now: float, advised: Mapping[str, float] | None = None) -> RenewalPlan:
        holdings = self._holdings
        owned = [s for s in self._states.values() if holdings is None or s.name in holdings]
        share = len(owned) / max(self.group_logins, len(owned), 1)
        return plan_renewals(
            owned,
            now,
            lifetime_s=self.lifetime_s(),
            usable=self._usable,
            share=share if owned else 1.0,
            leads=self.leads,
            advised=advised,
            spent=self._spent,
        )

    def replan(self, now: float, advised: Mapping[str, float] | None = None) -> RenewalPlan:
        """A new plan from every owned login's progress, kept as `latest`. Made and kept under
        the lock, so a plan made from an older view never replaces a newer one."""
        with self._lock:
            self.latest = self.plan(now, advised)
            return self.latest

    def settle(
        self,
        state: LoginProgress,
        now: float,
        *,
        new_token: bool,
        stop_renewals_until: float,
        spent: tuple[float, ...] | None = None,
    ) -> tuple[float, float]:
        """After an attempt of `state`'s login: its advised renewal time (for a new token the
        advice, jittered; renewed at once when Tradovate did not say its lifetime) and when
        the group's new plan renews it. Stops the group's renewals until `stop_renewals_until`
        (a penalty ticket or a captcha on a renewal); `spent`: the renewal window's spends as
        the attempt found them (None: it did not look). Changes no login's progress."""
        advised = state.advised_renew_at
        if new_token and state.grant is not None:
            advised = self.leads.renew_at(state.grant) if state.grant.lifetime_known else now
        with self._lock:
            self.renewals_stopped_until = max(self.renewals_stopped_until, stop_renewals_until)
            if spent is not None:
                self._spent = spent
        plan = self.replan(now, {state.name: advised})
        return advised, plan.renew_at.get(state.name, advised)

    def renew_at(self, state: LoginProgress) -> float:
        """When the login renews: the latest plan's time, else its own advised time."""
        return self.latest.renew_at.get(state.name, state.advised_renew_at)
