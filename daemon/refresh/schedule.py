"""When each login is renewed, for the group's budget: Tradovate's advice (about 15 minutes
before expiry, jittered) while the group's renewals fit it; when they do not, one later lead for
the group, just enough to fit, down to ORCA_RENEW_LEAD_FLOOR, with the renewals paced a window's
share apart (earliest expiry first) so that tokens issued together never ask at once. What the
floor cannot keep alive is a stable set, `relogin` logins first, then the last in configuration
order: they are not renewed (a `relogin` one logs in again at its advised time, a `wait` one is
said to lapse), so a renewal never goes to them at the cost of a kept login.

`plan_renewals` is pure. `RenewalSchedule` is the one owner of the group's state as this
instance sees it: the latest plan (when each owned login renews, which are beyond the budget) and
the group's renewal stop (a penalty ticket or a captcha on a renewal), behind a lock of its own.
A login's job replans under it and changes only its own progress: no job writes another's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from daemon.constants import ASSUMED_TOKEN_LIFETIME_S
from daemon.refresh.policy import Policy, RenewalCapacity, keeps_alive
from daemon.refresh.progress import LoginProgress
from daemon.timescale import TimeScale


def assumed_lifetime_s(window_s: float) -> float:
    """80 minutes of Tradovate's hour, on the budget window's time-scale."""
    return TimeScale(window_s).of(ASSUMED_TOKEN_LIFETIME_S)


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


def plan_renewals(
    logins: Sequence[LoginProgress],
    now: float,
    *,
    lifetime_s: float,
    window_s: float,
    usable: int,
    share: float,
    policy: Policy,
) -> RenewalPlan:
    """`logins`: those this instance owns, in configuration order; `usable`: the group's
    renewals a window; `share`: this instance's part of the group's logins (its part of the
    budget)."""
    advice_s = policy.renew_before_expiry_s(lifetime_s)
    floor_s = min(policy.lead_floor_s(lifetime_s), advice_s)
    mine = usable * share
    hopeful = [state for state in logins if _may_hold_a_token(state, now)]
    at_advice = RenewalCapacity(len(hopeful), lifetime_s - advice_s, window_s, mine)
    order = {state.name: n for n, state in enumerate(logins)}
    beyond: list[LoginProgress] = []
    if at_advice.short:
        ranked = sorted(
            hopeful, key=lambda s: (s.login.when_budget_short == "relogin", order[s.name])
        )
        # A window's share apart, and a stagger: the spend a window ago has surely left it.
        pace_s = window_s / max(mine, 1e-9) + policy.stagger_s
        kept_count = min(len(ranked), int((lifetime_s - floor_s) / pace_s))
        kept, beyond = ranked[:kept_count], ranked[kept_count:]
        lead_s = min(advice_s, max(floor_s, lifetime_s - kept_count * pace_s))
        renew_at = _paced(kept, now, lifetime_s, lead_s, pace_s)
    else:
        lead_s, renew_at = advice_s, {}
    renew_at |= {s.name: s.advised_renew_at for s in logins if s.grant and s.name not in renew_at}
    return RenewalPlan(
        lead_s=lead_s,
        floor_s=floor_s,
        short=at_advice.short,
        keeps_alive=keeps_alive(usable, lifetime_s - lead_s, window_s),
        keeps_alive_at_floor=keeps_alive(usable, lifetime_s - floor_s, window_s),
        needed=len(hopeful) * window_s / max(lifetime_s - lead_s, 1.0),
        beyond=tuple(s.name for s in sorted(beyond, key=lambda s: order[s.name])),
        renew_at=renew_at,
    )


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
    return state.holds_valid_token(now) or not (state.parked_until > now or state.not_before > now)


class RenewalSchedule:
    """The plan for the logins this instance owns, from their progress and the group's load,
    and the group's renewal stop: replaced and read under one lock."""

    def __init__(
        self,
        states: Mapping[str, LoginProgress],
        policy: Policy,
        usable: int,
        window_s: float,
        *,
        owns: Callable[[str], bool] = lambda login: True,
        group_owned: Callable[[], int] | None = None,
    ) -> None:
        """`group_owned()`: how many logins the instances of this budget group own together
        (their heartbeats), None: this instance alone."""
        self._states = states
        self._policy = policy
        self._usable = usable
        self._window_s = window_s
        self._owns = owns
        self._group_owned = group_owned
        self._lock = threading.Lock()
        self._renew_at: Mapping[str, float] = {}
        self._beyond: frozenset[str] = frozenset()
        self._renewals_stopped_until = 0.0

    def lifetime_s(self) -> float:
        """The shortest life of the tokens held (80 minutes before any)."""
        lives = [s.grant.lifetime_s for s in self._states.values() if s.grant is not None]
        return min(lives, default=assumed_lifetime_s(self._window_s))

    def plan(self, now: float) -> RenewalPlan:
        owned = [s for s in self._states.values() if self._owns(s.name)]
        group = self._group_owned() if self._group_owned is not None else 0
        share = len(owned) / max(group, len(owned), 1)
        return plan_renewals(
            owned,
            now,
            lifetime_s=self.lifetime_s(),
            window_s=self._window_s,
            usable=self._usable,
            share=share if owned else 1.0,
            policy=self._policy,
        )

    def replan(self, now: float) -> RenewalPlan:
        """A new plan from every owned login's progress, kept for `renew_at` and `beyond`.
        Made and kept under the lock, so a plan made from an older view never replaces a newer
        one."""
        with self._lock:
            plan = self.plan(now)
            self._renew_at, self._beyond = plan.renew_at, frozenset(plan.beyond)
            return plan

    def renew_at(self, state: LoginProgress) -> float:
        """When the login renews: the plan's time, else its own advised time."""
        with self._lock:
            return self._renew_at.get(state.name, state.advised_renew_at)

    def beyond(self, name: str) -> bool:
        """The plan does not renew it: the group's budget is short."""
        with self._lock:
            return name in self._beyond

    def stop_renewals(self, until: float) -> None:
        """A penalty ticket or a captcha on a renewal: the group renews nothing until then."""
        with self._lock:
            self._renewals_stopped_until = max(self._renewals_stopped_until, until)

    def renewals_stopped_for(self, now: float) -> float:
        """How long the group's renewals stay stopped from `now` (0: not stopped)."""
        with self._lock:
            return max(self._renewals_stopped_until - now, 0.0)
