"""The refresh policy of one login: what an attempt does (`Policy.decide`, from the login's
progress, the clock and the group's latest renewal plan) and how long it waits after a failure.
Pure: no I/O, no clock of its own.

Log in once; renew when the group's schedule (`refresh.schedule`) says, about 15 minutes before
expiry; log in again only when renewal is refused or the token has run out. One attempt asks
Tradovate once at most: what a first answer leads to (a refused token's login, a renewal that
confirms a token the account list refused) is the next attempt's, due at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from redis.backoff import EqualJitterBackoff

from daemon.constants import (
    BUDGET_WINDOW_S,
    CREDENTIALS_REJECTED_RETRY_S,
    DEFAULT_TOKEN_PROBE_INTERVAL_S,
    LOCKED_PARK_S,
    LOCKOUT_S,
    RATE_LIMITED_BACKOFF_S,
    REJECTED_BACKOFF_S,
    RETRY_BACKOFF_BASE_S,
    RETRY_BACKOFF_CAP_S,
)
from daemon.outcomes import Outcome
from daemon.refresh.progress import LoginProgress, credential
from daemon.refresh.schedule import RenewalPlan
from daemon.store.status import LoginStatus
from daemon.timescale import TimeScale, key_margin_s
from daemon.token_format import parse_expiration_time


class Action(Enum):
    WAIT_PARKED = "wait_parked"  # a park or the rejected ladder's back-off runs
    KEEP = "keep"  # the token is good and nothing is due: its keys are written again
    LIST_ACCOUNTS = "list_accounts"  # ask /account/list with the held token
    RENEW = "renew"  # renewaccesstoken, within the group's budget
    LOGIN = "login"  # accesstokenrequest or /authorize (paced), then the new session's accounts


@dataclass(frozen=True)
class Decision:
    """What one attempt does, decided before it acts."""

    action: Action
    now: float
    renew_at: float = math.inf  # when the group's plan renews the login
    # RENEW: the plan does not renew it (beyond the budget): no renewal is spent on it
    beyond: bool = False
    # RENEW: a renewal slot freeing at or after this time is too late: the login logs in
    # instead (a `relogin` login; infinity for a `wait` one)
    relogin_from: float = math.inf
    # RENEW: added to a wait for a renewal slot, so that the login whose token dies first
    # asks first when one frees
    stagger_s: float = 0.0
    # LOGIN: a `wait` login whose token lapsed for want of renewals logs in only when a
    # renewal slot is free now (else it would open a session only to lapse again)
    needs_room: bool = False


class Policy:
    """What an attempt does; how long to wait after a failure."""

    def __init__(
        self,
        *,
        account_check_interval_s: float = DEFAULT_TOKEN_PROBE_INTERVAL_S,
        window_s: float = BUDGET_WINDOW_S,
    ) -> None:
        """`window_s`: the budget window, the time-scale of every wait."""
        self.window_s = window_s
        self.scale = TimeScale(window_s)
        self.account_check_interval_s = account_check_interval_s
        self._backoff = EqualJitterBackoff(cap=RETRY_BACKOFF_CAP_S, base=RETRY_BACKOFF_BASE_S)

    def decide(
        self,
        progress: LoginProgress,
        now: float,
        plan: RenewalPlan,
        *,
        force: bool = False,
        others: Iterable[LoginProgress] = (),
    ) -> Decision:
        """One attempt's action from the login's progress, the clock and the group's latest
        plan. A park or the ladder's back-off waits; a login without a valid token logs in;
        a token whose renewal is due (or `force`d, or that the account list refused) renews;
        a token whose account check is due lists the accounts; else its keys are written.
        `others`: the logins sharing the budget, for the stagger when renewals are short."""
        if progress.parked_until > now or progress.not_before > now:
            return Decision(Action.WAIT_PARKED, now)
        grant = progress.grant
        if grant is None or grant.expires_at <= now:
            needs_room = progress.lapsed_for_budget and progress.login.when_budget_short == "wait"
            beyond = progress.name in plan.beyond
            return Decision(Action.LOGIN, now, beyond=beyond, needs_room=needs_room)
        renew_at = plan.renew_at.get(progress.name, progress.advised_renew_at)
        if force or now >= renew_at or progress.confirm_by_renewal:
            relogin = progress.login.when_budget_short == "relogin"
            due_first = _earlier_due(others, progress, now, plan.renew_at)
            return Decision(
                Action.RENEW,
                now,
                renew_at=renew_at,
                beyond=progress.name in plan.beyond,
                relogin_from=grant.expires_at - plan.relogin_lead_s if relogin else math.inf,
                stagger_s=plan.stagger_s * due_first,
            )
        if self._account_check_due(progress, now):
            return Decision(Action.LIST_ACCOUNTS, now, renew_at=renew_at)
        return Decision(Action.KEEP, now, renew_at=renew_at)

    def _account_check_due(self, progress: LoginProgress, now: float) -> bool:
        """Time to list the accounts with the held token: a session never listed (its keys
        could not be written under its accounts yet) or a check period gone by. That call has
        no address budget and is refused once Tradovate closed the session (a third login
        elsewhere, a password change), so a dead token leaves Redis within one check period."""
        if progress.accounts_paused_until > now:
            return False
        fetched = progress.accounts_fetched_at
        return fetched is None or now - fetched >= self.account_check_interval_s

    def accounts_pause_s(self, denials: int) -> float:
        """How long /account/list is not asked after its `denials`-th refusal of a live token:
        the rejected-password ladder, 15 minutes to 4 hours."""
        return self._rejected_s(denials)

    def _rejected_s(self, times: int) -> float:
        """The rejected ladder's step after `times` refusals: 15 min, 30, 60, 2 h, 4 h."""
        return self.scale.of(REJECTED_BACKOFF_S[min(max(times, 1), len(REJECTED_BACKOFF_S)) - 1])

    def park_s(self, outcome: Outcome, *, captcha_park_s: float, logging_in: bool) -> float | None:
        """A wait no retry and no operator may shorten, or None: a captcha's park, a 429's
        hour (that user only), TemporaryLocked's hour, and a 423's hour when it answered a
        login (on a renewal the login itself is not the one being locked)."""
        if outcome is Outcome.CAPTCHA:
            return captcha_park_s
        if outcome is Outcome.RATE_LIMITED:
            return self.scale.of(RATE_LIMITED_BACKOFF_S)
        if outcome is Outcome.LOCKED:
            return self.scale.of(LOCKED_PARK_S)
        if outcome is Outcome.LOCKOUT and logging_in:
            return self.scale.of(LOCKOUT_S)
        return None

    def restore_backoff(
        self, state: LoginProgress, recorded: LoginStatus, now: float, longest_park_s: float
    ) -> bool:
        """A rejected password's back-off, a park and a Closed user outlive the process: under
        Restart=on-failure a crash loop must not retry them at every start. Closed holds only
        while the password is the one it was closed with (a changed configuration tries). True
        when the recorded status set any of them on `state`."""
        if recorded.last_outcome is None:
            return False
        outcome, restored = recorded.last_outcome, False
        parked_until = parse_expiration_time(recorded.parked_until)
        if parked_until is not None and parked_until > now and recorded.park_reason is not None:
            # A status is anyone's to write: no park outlasts the longest Tradovate documents.
            state.parked_until = min(parked_until, now + longest_park_s)
            state.park_reason = recorded.park_reason
            restored = True
        due = parse_expiration_time(recorded.next_attempt_at)
        if outcome is Outcome.CLOSED and recorded.credential == credential(state):
            state.not_before, restored = math.inf, True
        elif outcome.held_back and due is not None and due > now and state.not_before <= now:
            state.not_before, restored = (
                min(due, now + self._rejected_s(len(REJECTED_BACKOFF_S))),
                True,
            )
        if restored:
            state.failures = recorded.failures
            state.last_outcome, state.last_error = outcome, recorded.last_error
        return restored

    def after_failure(
        self,
        outcome: Outcome,
        progress: LoginProgress,
        now: float,
        *,
        captcha_park_s: float,
        logging_in: bool,
    ) -> tuple[float, float | None]:
        """The wait after a failure, and the park it is (`park_s`: nobody shortens it), or
        None."""
        park_s = self.park_s(outcome, captcha_park_s=captcha_park_s, logging_in=logging_in)
        if park_s is not None:
            return park_s, park_s
        return self.delay_after_failure(outcome, progress, now, captcha_park_s=captcha_park_s), None

    def delay_after_failure(
        self, outcome: Outcome, progress: LoginProgress, now: float, *, captcha_park_s: float
    ) -> float:
        """Exponential backoff with jitter (while a token is held, at most halfway to its key's
        expiry: a renewal at the floor that failed is tried again in time), but a wrong
        password (and what else needs a person: Unconfirmed, a 400, a 404) climbs the rejected
        ladder, Closed waits for an operator (infinity), a captcha its park, and a 429 an hour.
        A login that succeeded but gave a token that cannot be used (`session_unused`: a
        session was opened for nothing, perhaps because this clock is off) waits like a wrong
        password: every retry would open another session, and a third logs the trader out."""
        failures, held = progress.failures, progress.grant
        session_unused = progress.session_unused
        backoff = self._backoff.compute(failures)
        unusable = outcome in (Outcome.INVALID_RESPONSE, Outcome.INVALID_TOKEN)
        if session_unused and unusable:
            return max(self.scale.of(CREDENTIALS_REJECTED_RETRY_S), backoff)
        if outcome is Outcome.CAPTCHA:
            return captcha_park_s
        if outcome is Outcome.RATE_LIMITED:
            return self.scale.of(RATE_LIMITED_BACKOFF_S)
        if outcome is Outcome.CLOSED:
            return math.inf
        if outcome.held_back:
            # 15 min, 30, 60, 2 h, 4 h: one wrong password never spends the failures the
            # other logins of the address may need (Tradovate allows 5 an hour for all).
            return self._rejected_s(failures)
        if held is not None and held.expires_at > now:
            key_left_s = held.expires_at - key_margin_s(held.lifetime_s, self.window_s) - now
            return min(float(backoff), max(1.0, key_left_s / 2))
        return float(backoff)


def _earlier_due(
    others: Iterable[LoginProgress],
    progress: LoginProgress,
    now: float,
    renew_at: Mapping[str, float],
) -> int:
    """How many other logins the group's plan renews by this one's time (or now), and that
    expire before this one."""
    assert progress.grant is not None
    expires_at = progress.grant.expires_at
    by = max(now, renew_at.get(progress.name, progress.advised_renew_at))
    return sum(
        1
        for other in others
        if other is not progress
        and other.grant is not None
        and other.grant.expires_at < expires_at
        and renew_at.get(other.name, other.advised_renew_at) <= by
    )
