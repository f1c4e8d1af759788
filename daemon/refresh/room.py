"""Room to log in again: a `wait` login whose token ran out for want of renewals logs in only
when the budget has room for its renewals, one login at a time, so that concurrent attempts
never admit more than the budget renews (each would then push a kept login out)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from daemon.refresh.capacity import assumed_lifetime_s
from daemon.refresh.policy import Policy, room_to_log_in
from daemon.refresh.progress import LoginProgress
from daemon.store.budget import RENEW, AddressBudget


class LoginRoom:
    def __init__(
        self, states: Mapping[str, LoginProgress], policy: Policy, budget: AddressBudget
    ) -> None:
        self._states = states
        self._policy = policy
        self._budget = budget
        self._lock = threading.Lock()
        self._admitted: set[str] = set()  # let in, no token yet: counted as holding one

    def admit(self, state: LoginProgress, now: float) -> bool:
        """May this login log in now. A lapsed `wait` one is let in only while the logins
        holding tokens (and those let in before it) and itself fit the budget's renewals."""
        if not state.lapsed_for_budget:
            return True
        window_s = self._budget.window_s
        lifetime = state.grant.lifetime_s if state.grant else assumed_lifetime_s(window_s)
        with self._lock:
            holding = sum(
                1
                for other in self._states.values()
                if other.holds_valid_token(now) or other.name in self._admitted
            )
            room = room_to_log_in(
                state,
                holding=holding,
                period_s=self._policy.renewal_period_s(lifetime),
                window_s=window_s,
                usable=self._budget.usable(RENEW),
                used=lambda: self._budget.used(RENEW, now),
            )
            if room:
                self._admitted.add(state.name)
        state.lapsed_for_budget = not room
        return room

    def settled(self, name: str) -> None:
        """The login holds a token now, or its attempt failed: no longer counted as let in."""
        with self._lock:
            self._admitted.discard(name)
