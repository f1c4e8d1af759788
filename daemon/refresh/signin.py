"""Sending a login (accesstokenrequest or /authorize) within the pacing and the group's
failed-login budget: the one place a new Tradovate session may be opened."""

from __future__ import annotations

from collections.abc import Callable

from daemon.constants import LOGIN_FAILURE_SHARE
from daemon.refresh.progress import LOGIN_DEFERRED, AuthDeferred, LoginProgress
from daemon.store.budget import LOGIN_FAILURE, AddressBudget
from daemon.tradovate import (
    AuthPacer,
    PenaltyTicket,
    TokenGrant,
    TradovateClient,
    TradovateUnavailable,
)


class SignIn:
    def __init__(
        self,
        tradovate: TradovateClient,
        pacer: AuthPacer,
        budget: AddressBudget,
        clock: Callable[[], float],
    ) -> None:
        self._tradovate = tradovate
        self._pacer = pacer
        self._budget = budget
        self._clock = clock

    def send(self, state: LoginProgress, now: float) -> TokenGrant:
        """Log the login in once its pacing slot and a failed-login slot are there; raises
        AuthDeferred until then, and whatever Tradovate answered otherwise."""
        if state.auth_slot_at is None:
            state.auth_slot_at = now + self._pacer.reserve()
        if state.auth_slot_at > now:
            raise AuthDeferred(state.auth_slot_at - now)
        # Only failed logins count against the address; a slot is taken before sending (the
        # outcome is unknown) and given back when the login succeeds.
        spend = self._budget.try_spend(
            LOGIN_FAILURE, now, who=state.name, share=LOGIN_FAILURE_SHARE, pending=True
        )
        if not spend.ok:
            raise AuthDeferred(max(spend.wait_s, 1.0), LOGIN_DEFERRED)
        state.auth_slot_at = None
        ticket, state.p_ticket = state.p_ticket, None
        # From here a session may be open: if what comes back cannot be used, the next login
        # waits as long as after a rejected password (no churn of sessions).
        state.session_unused = True
        counted = True
        try:
            grant = self._tradovate.login(state.login, p_ticket=ticket)
            counted = False
        except PenaltyTicket as penalty:
            self._budget.block(LOGIN_FAILURE, penalty.wait_s, now)
            raise
        except TradovateUnavailable:
            # A timeout, a reset or a 5xx is no failed login of Tradovate's counting: an outage
            # must not stall every login of the address for an hour.
            counted = False
            raise
        finally:
            self._budget.settle(LOGIN_FAILURE, spend, self._clock(), counted=counted)
        return grant
