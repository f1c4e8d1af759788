"""The one-second membership round: heartbeat, lease renewals, which logins to take or let go
(`service.ownership` decides), refresh requests, and keeping Redis in step after it comes back.
All on the lease client, whose calls end within a second: a hung Redis costs a round, never a
lease's deadline."""

from __future__ import annotations

import contextlib
import os
import time

import redis
import structlog

from daemon.constants import PROTOCOL_VERSION
from daemon.service.budget_report import BudgetReporter
from daemon.service.components import Components
from daemon.service.jobs import Jobs
from daemon.service.ownership import Plan
from daemon.service.requests import RequestBroker
from daemon.store.heartbeat import Heartbeat, logins_digest, remove_heartbeat
from daemon.store.tokens import login_tokens
from daemon.token_format import iso

log = structlog.get_logger("daemon.service")

REDIS_DOWN_REPEAT_S = 60.0  # `redis.down` again, with down_for_s, while Redis stays down


class Membership:
    def __init__(
        self,
        components: Components,
        jobs: Jobs,
        requests: RequestBroker,
        budget: BudgetReporter,
    ) -> None:
        self._c = components
        self._jobs = jobs
        self._requests = requests
        self._budget = budget
        self._started_at = components.clock()
        self._logins_digest = logins_digest(components.ownership.logins)
        # Computed once: what other instances weigh this one by does not move.
        self._renew_usable, self._keeps_alive = components.capacity.configured()
        self._next_down_log_at = 0.0

    def round(self) -> None:
        c = self._c
        try:
            plan = c.ownership.round(self.heartbeat())
            c.refresher.schedule.group_logins = c.ownership.group_logins
            self._apply(plan)
            if c.ownership.standby is None:
                self._requests.take()
            else:
                self._count_unrefreshed_standing_by()
            c.metrics.logins_unrefreshed.set(c.ownership.unheld or 0)
        except redis.RedisError as error:
            c.redis_health.failed(error)
            self._repeat_redis_down()
            return
        finally:
            owned = len(c.owned())
            c.metrics.logins_owned.set(owned)
            c.metrics.leader.set(1 if owned else 0)
        c.redis_health.succeeded()
        self._next_down_log_at = 0.0
        if c.redis_health.came_back.is_set():
            c.redis_health.came_back.clear()
            self.reconcile()  # Redis may have come back empty: restore at once

    def _count_unrefreshed_standing_by(self) -> None:
        """Standing by, the logins are someone else's to refresh: those without a valid token
        in Redis are nobody's (`/readyz` 503, OrcaLoginsUnrefreshed)."""
        c = self._c
        found = login_tokens(c.lease_client, c.ownership.logins, c.clock())
        c.ownership.unheld = sum(1 for _, word in found.values() if not word.usable)

    def reconcile(self) -> None:
        if not self._c.owned():
            return
        try:
            self._c.keeper.reconcile()
        except redis.RedisError as error:
            self._c.redis_health.failed(error)

    def restore_budget(self) -> None:
        """This instance's own spends and blocks back in Redis where an eviction dropped them
        (on the shared client, apart from the round: a slow Redis costs this job, not a lease)."""
        try:
            self._c.refresher.budget.restore_own(self._c.clock())
        except redis.RedisError as error:
            self._c.redis_health.failed(error)

    def leave(self) -> None:
        """A clean stop: hand every lease over at once and take the heartbeat away."""
        c = self._c
        c.ownership.leases.release(c.owned())
        with contextlib.suppress(redis.RedisError):
            remove_heartbeat(c.lease_client, c.instance)

    def heartbeat(self) -> Heartbeat:
        c = self._c
        return Heartbeat(
            instance=c.instance,
            pid=os.getpid(),
            started_at=iso(self._started_at),
            at=c.clock(),
            logins=len(c.settings.logins),
            owned=len(c.owned()),
            protocol=PROTOCOL_VERSION,
            standby=c.ownership.standby is not None,
            group=c.settings.budget_group,
            address=c.settings.tradovate.local_address,
            renew_usable=self._renew_usable,
            keeps_alive=self._keeps_alive,
            logins_digest=self._logins_digest,
        )

    def _apply(self, plan: Plan) -> None:
        """Lost leases stop at once; a login assigned elsewhere is let go between refreshes
        (one running now is let go at a later round); taken ones adopt Redis's token first."""
        c, refresher = self._c, self._c.refresher
        if plan.lost:
            self._jobs.remove_logins(plan.lost)
            refresher.forget_tokens(plan.lost)
        idle = [s for s in map(refresher.states.get, plan.to_release) if s is not None]
        idle = [state for state in idle if state.lock.acquire(blocking=False)]
        released = [state.name for state in idle]
        try:
            self._jobs.remove_logins(released)
            c.ownership.leases.release(released)
        finally:
            for state in idle:
                state.lock.release()
        if released:
            refresher.forget_tokens(released)
            log.info("logins.released", instance=c.instance, logins=released, owned=len(c.owned()))
        if plan.taken:
            try:
                self._c.adoption.adopt(plan.taken)
            except BaseException:  # nothing half done: the leases go back, taken at a later round
                c.ownership.leases.release(plan.taken)
                raise
            self._jobs.add_logins(plan.taken, c.refresher.job, c.settings.refresh_interval_s)
            log.info("logins.taken", instance=c.instance, logins=plan.taken, owned=len(c.owned()))
            self._budget.report()  # an owner publishes the address's capacity at once
        if plan.lost or released or plan.taken:
            self._replan()

    def _replan(self) -> None:
        """The logins held changed: the group's plan is made again for those now held, and a
        login whose job would wake later than the new plan renews it is woken then. A job
        woken early only finds its renewal not yet due; one woken late, after a plan made for
        other logins (all those an instance held alone at start, say), would find its slots
        spent and its token lapsing."""
        c = self._c
        now = c.clock()
        plan = c.refresher.schedule.replan(now)
        for name in c.owned():
            state = c.refresher.states.get(name)
            renew_at = plan.renew_at.get(name)
            if state is None or renew_at is None:
                continue
            if state.next_attempt_at is None or renew_at < state.next_attempt_at:
                self._jobs.reschedule(name, max(0.0, renew_at - now))

    def _repeat_redis_down(self) -> None:
        now = time.monotonic()
        if now >= self._next_down_log_at:
            if self._next_down_log_at:
                self._c.redis_health.log_down()
            self._next_down_log_at = now + REDIS_DOWN_REPEAT_S
