"""The group's budgets said out loud: in /metrics, in Redis for `status` (from an owner), and in
the log at the first report and whenever the verdict changes."""

from __future__ import annotations

import contextlib

import redis
import structlog

from daemon.service.components import Components

log = structlog.get_logger("daemon.service")

BUDGET_REPORT_INTERVAL_S = 15.0
CAPACITY_HINT = (
    "this /24 subnet may renew fewer tokens an hour than the logins need: run another instance "
    "on another /24 subnet with its own ORCA_BUDGET_GROUP (docs/concepts.md#scale-out), or mark "
    'API-only logins when_budget_short = "relogin"'
)


class BudgetReporter:
    def __init__(self, components: Components) -> None:
        self._c = components
        self._short_said: bool | None = None

    def report(self) -> None:
        """Needed renewals are those of the logins this instance owns."""
        c = self._c
        owned = len(c.owned())
        try:
            capacity = c.capacity.report(c.clock())
        except redis.RedisError as error:
            c.redis_health.failed(error)
            return
        gauge = c.metrics.tradovate_budget
        gauge.labels(endpoint="renew", kind="limit").set(capacity.renew_limit)
        gauge.labels(endpoint="renew", kind="used").set(capacity.renew_used)
        gauge.labels(endpoint="renew", kind="needed").set(capacity.renew_needed)
        gauge.labels(endpoint="renew", kind="keeps_alive").set(capacity.keeps_alive)
        gauge.labels(endpoint="renew", kind="keeps_alive_at_floor").set(
            capacity.keeps_alive_at_floor
        )
        c.metrics.renew_lead.set(capacity.renew_lead_s)
        gauge.labels(endpoint="login_failure", kind="limit").set(capacity.login_failure_limit)
        gauge.labels(endpoint="login_failure", kind="used").set(capacity.login_failure_used)
        gauge.labels(endpoint="login_failure", kind="needed").set(0)
        if not owned:
            return
        with contextlib.suppress(redis.RedisError):
            c.refresher.budget.publish_capacity(
                capacity.as_dict(), int(BUDGET_REPORT_INTERVAL_S * 4)
            )
        if capacity.short != self._short_said:
            self._short_said = capacity.short
            if capacity.short:
                log.warning("budget.capacity", **capacity.as_dict(), hint=CAPACITY_HINT)
            else:
                log.info("budget.capacity", **capacity.as_dict())
