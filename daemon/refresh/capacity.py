"""How many renewals the logins need against what the budget group may spend: one computation
for the daemon's `budget.capacity`, `status` (through Redis) and the heartbeat's weight."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from daemon.constants import ASSUMED_TOKEN_LIFETIME_S, BUDGET_WINDOW_S
from daemon.refresh.policy import Policy, RenewalCapacity
from daemon.refresh.progress import LoginProgress
from daemon.store.budget import LOGIN_FAILURE, RENEW, AddressBudget


def assumed_lifetime_s(window_s: float) -> float:
    """80 minutes of Tradovate's hour, on the budget window's time-scale."""
    return ASSUMED_TOKEN_LIFETIME_S * window_s / BUDGET_WINDOW_S


@dataclass(frozen=True)
class CapacityReport:
    """Its fields are the log line's and the JSON `status` reads from Redis: never rename."""

    group: str
    window_s: int
    renew_limit: int
    renew_usable: int
    renew_needed: float
    renew_used: int
    login_failure_limit: int
    login_failure_used: int
    short: bool
    keeps_alive: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Capacity:
    def __init__(
        self,
        budget: AddressBudget,
        policy: Policy,
        states: Mapping[str, LoginProgress],
        window_s: int,
    ) -> None:
        self._budget = budget
        self._policy = policy
        self._states = states
        self._window_s = window_s

    def report(self, now: float, logins: int | None = None) -> CapacityReport:
        """Renewals `logins` (all configured) need in one budget window against what the
        address may spend (Tradovate's limit less a reserve), from the tokens held (80 minutes
        before any)."""
        lifetimes = [s.grant.lifetime_s for s in self._states.values() if s.grant is not None]
        budget = self._budget
        capacity = RenewalCapacity(
            len(self._states) if logins is None else logins,
            self._policy.renewal_period_s(
                min(lifetimes, default=assumed_lifetime_s(self._window_s))
            ),
            self._window_s,
            budget.usable(RENEW),
        )
        return CapacityReport(
            group=budget.group,
            window_s=self._window_s,
            renew_limit=budget.limits[RENEW],
            renew_usable=capacity.usable,
            renew_needed=round(capacity.needed, 1),
            renew_used=budget.used(RENEW, now),
            login_failure_limit=budget.limits[LOGIN_FAILURE],
            login_failure_used=budget.used(LOGIN_FAILURE, now),
            short=capacity.short,
            keeps_alive=capacity.keeps_alive,
        )

    def configured(self) -> tuple[int, int]:
        """The renewals an hour this address may spend and the logins they keep alive, from
        configuration alone (tokens assumed to live 80 minutes of a one-hour window): what other
        instances weigh this one by when they share the logins."""
        usable = self._budget.usable(RENEW)
        period_s = self._policy.renewal_period_s(assumed_lifetime_s(self._window_s))
        return usable, RenewalCapacity(0, period_s, self._window_s, usable).keeps_alive
