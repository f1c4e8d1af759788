"""Either route's login as Tradovate answers it: authentication pacing, penalty tickets and their
resends, the failed-login budget of the client's /24, the user's status, and the session a
login opens."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from daemon.sim.tradovate import answers
from daemon.sim.tradovate.desks import FakeUser
from daemon.sim.tradovate.limits import AddressLimits
from daemon.sim.tradovate.observations import Observations
from daemon.sim.tradovate.rules import LOGIN_PATH
from daemon.sim.tradovate.sessions import Session, Sessions

WRONG_PASSWORD = (
    "Incorrect username or password. Please try again, noting that passwords are case-sensitive."
)


class SignIns:
    def __init__(
        self,
        users: Mapping[str, FakeUser],
        limits: AddressLimits,
        sessions: Sessions,
        seen: Observations,
    ) -> None:
        self._users = users
        self._limits = limits
        self._sessions = sessions
        self._seen = seen

    def answer(
        self,
        body: dict[str, Any],
        address: str,
        now: float,
        *,
        name: str,
        key_ok: bool,
        failure: Callable[[str], dict[str, Any]],
        success: Callable[[Session], dict[str, Any]],
    ) -> tuple[int, Any]:
        if self._limits.auth_paced_out(now):
            return 429, {"errorText": "Too many requests"}
        ticket = body.get("p-ticket")
        if ticket is not None:
            if not self._limits.resend_accepted(ticket, body, now):
                return 200, failure("Invalid or early p-ticket")
            self._seen.penalty_resends_ok += 1
        elif (penalty := self._limits.login_penalty(address, body, now)) is not None:
            self._seen.penalties[LOGIN_PATH] += 1
            return 200, penalty
        user = self._users.get(name)
        right = user is not None and body.get("password") == user.password and key_ok
        stopped = answers.STOPPING_STATUSES.get(user.status) if right and user else None
        if user is None or not right or stopped is not None:
            self._limits.failed_login(address, now)
            self._seen.failed_login_times.append(now)
            return 200, failure(stopped if stopped is not None else WRONG_PASSWORD)
        self._seen.sessions_opened[user.name] += 1
        return 200, success(self._sessions.open(user.name, now))
