"""Tradovate's limits on who asks, as the simulator keeps them: authentication requests a minute
(when set), and per /24 of the client address a rolling window of renewals (every request counts)
and of failed logins, each answered with a penalty ticket past its budget. A ticket's resend must
repeat its login's body once its time is up."""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable
from typing import Any

from daemon.sim.tradovate import answers
from daemon.sim.tradovate.rules import LOGIN_FAILURE_BUDGET, RENEW_BUDGET


class AddressLimits:
    def __init__(
        self,
        *,
        window_s: Callable[[], float],
        penalty_s: Callable[[], float],
        budgets: bool,
        auth_per_minute: int | None,
    ) -> None:
        """`window_s()` and `penalty_s()`: on the simulation's time-scale; `budgets`: False
        lifts the per-address budgets (the tickets of injected faults still hold)."""
        self._window_s = window_s
        self._penalty_s = penalty_s
        self._budgets = budgets
        self._auth_per_minute = auth_per_minute
        self._auth_times: collections.deque[float] = collections.deque()
        self._tickets: dict[str, dict[str, Any]] = {}
        self._renewals: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._failed_logins: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )

    def auth_paced_out(self, now: float) -> bool:
        """Over the authentication requests a minute (a 429); counts this one otherwise."""
        if self._auth_per_minute is None:
            return False
        while self._auth_times and self._auth_times[0] <= now - 60:
            self._auth_times.popleft()
        if len(self._auth_times) >= self._auth_per_minute:
            return True
        self._auth_times.append(now)
        return False

    def resend_accepted(self, ticket: object, body: dict[str, Any], now: float) -> bool:
        """A resend with `p-ticket`: the ticket's own body, once its time is up (used once)."""
        original = self._tickets.pop(str(ticket), None)
        resent = {k: v for k, v in body.items() if k != "p-ticket"}
        return original is not None and resent == original["body"] and now >= original["due"]

    def ticket(self, body: dict[str, Any], p_time_s: float, now: float) -> dict[str, Any]:
        """A penalty ticket for this body: its resend is accepted `p_time_s` from now."""
        ticket = secrets.token_hex(8)
        self._tickets[ticket] = {"body": body, "due": now + p_time_s}
        return {"p-ticket": ticket, "p-time": p_time_s}

    def login_penalty(self, address: str, body: dict[str, Any], now: float) -> Any:
        """A ticket when the address's failed logins fill the window."""
        if self._full(self._failed_logins[answers.subnet(address)], LOGIN_FAILURE_BUDGET, now):
            return self.ticket(body, self._penalty_s(), now)
        return None

    def failed_login(self, address: str, now: float) -> None:
        self._failed_logins[answers.subnet(address)].append(now)  # only failures count

    def renewal_penalty(self, address: str, now: float) -> Any:
        """A ticket when the address's renewals fill the window; this one counts either way."""
        spent = self._renewals[answers.subnet(address)]
        full = self._full(spent, RENEW_BUDGET, now)
        spent.append(now)  # every request counts, answered or not
        return {"p-ticket": secrets.token_hex(8), "p-time": self._penalty_s()} if full else None

    def _full(self, spent: collections.deque[float], limit: int, now: float) -> bool:
        while spent and spent[0] <= now - self._window_s():
            spent.popleft()
        return self._budgets and len(spent) >= limit
