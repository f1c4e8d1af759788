"""How many renewals the logins need against what the budget group may spend: one computation
for the daemon's `budget.capacity`, `status` (through Redis) and the heartbeat's weight."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from daemon.refresh.schedule import RenewalSchedule, assumed_lifetime_s, keeps_alive
from daemon.store.budget import LOGIN_FAILURE, RENEW, AddressBudget


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
    keeps_alive: int  # logins the group's budget keeps alive at the current lead ...
    keeps_alive_at_floor: int  # ... and at ORCA_RENEW_LEAD_FLOOR
    renew_lead_s: float  # how long before expiry the group renews now
    renew_lead_floor_s: float
    beyond: list[str]  # this instance's logins the budget does not keep alive

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Capacity:
    def __init__(self, budget: AddressBudget, schedule: RenewalSchedule) -> None:
        self._budget = budget
        self._schedule = schedule

    def report(self, now: float) -> CapacityReport:
        """The renewals this instance's logins need in one budget window at the group's lead,
        against what the group may spend (Tradovate's limit less a reserve)."""
        budget = self._budget
        plan = self._schedule.plan(now)
        return CapacityReport(
            group=budget.group,
            window_s=int(budget.window_s),
            renew_limit=budget.limits[RENEW],
            renew_usable=budget.usable(RENEW),
            renew_needed=round(plan.needed, 1),
            renew_used=budget.used(RENEW, now),
            login_failure_limit=budget.limits[LOGIN_FAILURE],
            login_failure_used=budget.used(LOGIN_FAILURE, now),
            short=plan.short,
            keeps_alive=plan.keeps_alive,
            keeps_alive_at_floor=plan.keeps_alive_at_floor,
            renew_lead_s=round(plan.lead_s, 1),
            renew_lead_floor_s=round(plan.floor_s, 1),
            beyond=list(plan.beyond),
        )

    def configured(self) -> tuple[int, int]:
        """The renewals an hour this group may spend and the logins they keep alive at the
        floor, from configuration alone (tokens assumed to live 80 minutes of a one-hour
        window): what other instances weigh this one by when they share the logins, computed
        once so that logins do not move when the lead does."""
        usable = self._budget.usable(RENEW)
        lifetime = assumed_lifetime_s(self._budget.window_s)
        floor = self._schedule.leads.lead_floor_s(lifetime)
        return usable, keeps_alive(usable, lifetime - floor, self._budget.window_s)
