"""The refresh policy of one login: what to do next and when, from its progress and the clock.
Pure: no I/O, no clock of its own, randomness injected.

Log in once; renew at about two thirds of the token's life (never later than
ORCA_REFRESH_INTERVAL); log in again only when renewal is refused or the token has run out.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from enum import Enum

from redis.backoff import EqualJitterBackoff

from daemon.config import Login
from daemon.constants import (
    CREDENTIALS_REJECTED_RETRY_S,
    DEFAULT_TOKEN_PROBE_INTERVAL_S,
    RATE_LIMITED_BACKOFF_S,
    RENEW_AT_LIFETIME_FRACTION,
    RENEW_JITTER_LIFETIME_FRACTION,
    RETRY_BACKOFF_BASE_S,
    RETRY_BACKOFF_CAP_S,
)
from daemon.outcomes import LoginState, Outcome
from daemon.tradovate import TokenGrant


@dataclass
class LoginProgress:
    """What the refresher holds and knows of one login between attempts."""

    login: Login
    grant: TokenGrant | None = None
    renew_at: float = 0.0
    accounts: tuple[str, ...] = ()
    accounts_fetched_at: float | None = None
    failures: int = 0
    last_outcome: Outcome | None = None
    last_error: str | None = None
    last_success_at: float | None = None
    next_attempt_at: float | None = None
    parked_until: float = 0.0
    p_ticket: str | None = None
    auth_slot_at: float | None = None  # a start time reserved with the AuthPacer
    alerted: bool = False  # a "failing" alert went out; the recovery gets one too
    notes: tuple[str, ...] = ()  # said once in the log, kept in the status (skipped names)
    written_names: tuple[str, ...] = ()  # the names its last write covered
    session_unused: bool = False  # a login was sent and nothing usable came of it yet
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.login.name

    def holds_valid_token(self, now: float) -> bool:
        return self.grant is not None and self.grant.expires_at > now

    def state(self, now: float) -> LoginState:
        if self.parked_until > now:
            return LoginState.PARKED
        if self.failures:
            return LoginState.FAILING
        return LoginState.OK if self.holds_valid_token(now) else LoginState.PENDING


class Action(Enum):
    WAIT_PARKED = "wait_parked"  # a captcha park runs
    KEEP = "keep"  # the token is good and renewal is not due
    RENEW = "renew"  # renewaccesstoken
    LOGIN = "login"  # accesstokenrequest (paced)


def next_action(progress: LoginProgress, now: float, *, force: bool = False) -> Action:
    if progress.parked_until > now:
        return Action.WAIT_PARKED
    if not progress.holds_valid_token(now):
        return Action.LOGIN
    if force or now >= progress.renew_at:
        return Action.RENEW
    return Action.KEEP


@dataclass(frozen=True)
class Attempt:
    """What one refresh attempt did, and when the next one is due."""

    outcome: Outcome
    delay_s: float

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def deferred(self) -> bool:
        return self.outcome.deferred


class Policy:
    """Timings: when to renew a new token, how long to wait after a failure or a success."""

    def __init__(
        self,
        refresh_interval_s: float,
        rng: random.Random | None = None,
        *,
        probe_interval_s: float = DEFAULT_TOKEN_PROBE_INTERVAL_S,
    ) -> None:
        self.refresh_interval_s = refresh_interval_s
        self.probe_interval_s = probe_interval_s
        self._rng = rng or random.Random()
        self._backoff = EqualJitterBackoff(cap=RETRY_BACKOFF_CAP_S, base=RETRY_BACKOFF_BASE_S)

    def renew_at(self, grant: TokenGrant) -> float:
        """About two thirds into the token's life (jittered so logins do not line up), and never
        later than ORCA_REFRESH_INTERVAL after it was issued."""
        fraction = RENEW_AT_LIFETIME_FRACTION + self._rng.uniform(
            -RENEW_JITTER_LIFETIME_FRACTION, RENEW_JITTER_LIFETIME_FRACTION
        )
        return min(
            grant.issued_at + grant.lifetime_s * fraction,
            grant.issued_at + self.refresh_interval_s,
        )

    def probe_due(self, progress: LoginProgress, now: float) -> bool:
        """Time to list the accounts with the held token again: that call has no address
        budget and is refused once Tradovate closed the session (a third login elsewhere, a
        password change), so a dead token leaves Redis within one probe period."""
        fetched = progress.accounts_fetched_at
        return fetched is None or now - fetched >= self.probe_interval_s

    def delay_after_success(self, progress: LoginProgress, now: float) -> float:
        """Until renewal or the next probe is due, whichever comes first."""
        probe_due = (progress.accounts_fetched_at or now) + self.probe_interval_s
        return max(min(progress.renew_at, probe_due) - now, 1.0)

    def delay_after_failure(
        self,
        outcome: Outcome,
        failures: int,
        *,
        captcha_park_s: float,
        session_unused: bool = False,
    ) -> float:
        """Exponential backoff with jitter, but a wrong password waits 5 minutes (Tradovate locks
        logins that hammer one), a captcha its park, and a 429 an hour. A login that succeeded
        but gave a token that cannot be used (`session_unused`: a session was opened for
        nothing, perhaps because this clock is off) waits like a wrong password: every retry
        would open another session, and a third logs the trader out."""
        backoff = self._backoff.compute(failures)
        unusable = outcome in (Outcome.INVALID_RESPONSE, Outcome.INVALID_TOKEN)
        if session_unused and unusable:
            return max(CREDENTIALS_REJECTED_RETRY_S, backoff)
        if outcome is Outcome.CAPTCHA:
            return captcha_park_s
        if outcome is Outcome.RATE_LIMITED:
            return RATE_LIMITED_BACKOFF_S
        if outcome is Outcome.REJECTED:
            return max(CREDENTIALS_REJECTED_RETRY_S, backoff)
        return backoff
