"""The refresh policy of one login: what to do next and when, from its progress and the clock.
Pure: no I/O, no clock of its own, randomness injected.

Log in once; renew about 15 minutes before expiry (sooner at ORCA_REFRESH_INTERVAL while the
address's budget fits it); log in again only when renewal is refused or the token has run out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from redis.backoff import EqualJitterBackoff

from daemon.config import Login
from daemon.constants import (
    BUDGET_STAGGER_S,
    BUDGET_WINDOW_S,
    CREDENTIALS_REJECTED_RETRY_S,
    DEFAULT_TOKEN_PROBE_INTERVAL_S,
    LOCKED_PARK_S,
    LOCKOUT_S,
    RATE_LIMITED_BACKOFF_S,
    REJECTED_BACKOFF_S,
    RENEW_BEFORE_EXPIRY_FRACTION,
    RENEW_BEFORE_EXPIRY_S,
    RENEW_JITTER_LIFETIME_FRACTION,
    RENEW_LEAD_FLOOR_S,
    RENEW_SLACK_MIN_S,
    RENEW_SLACK_S,
    RETRY_BACKOFF_BASE_S,
    RETRY_BACKOFF_CAP_S,
)
from daemon.outcomes import Outcome
from daemon.refresh.progress import LoginProgress, credential
from daemon.store.status import LoginStatus
from daemon.store.tokens import key_margin_s
from daemon.timescale import TimeScale
from daemon.token_format import parse_expiration_time
from daemon.tradovate import TokenGrant


class Action(Enum):
    WAIT_PARKED = "wait_parked"  # a captcha park runs
    KEEP = "keep"  # the token is good and renewal is not due
    RENEW = "renew"  # renewaccesstoken
    LOGIN = "login"  # accesstokenrequest (paced)


def next_action(
    progress: LoginProgress, now: float, *, renew_at: float, force: bool = False
) -> Action:
    """`renew_at`: when the group's schedule renews this login."""
    if progress.parked_until > now or progress.not_before > now:
        return Action.WAIT_PARKED
    if not progress.holds_valid_token(now):
        return Action.LOGIN
    if force or now >= renew_at:
        return Action.RENEW
    return Action.KEEP


def earlier_due(
    others: Iterable[LoginProgress],
    progress: LoginProgress,
    now: float,
    renew_at: Callable[[LoginProgress], float],
) -> int:
    """How many other logins are due for renewal (`renew_at`, the group's schedule) and expire
    before this one."""
    assert progress.grant is not None
    expires_at = progress.grant.expires_at
    return sum(
        1
        for other in others
        if other is not progress
        and other.grant is not None
        and other.grant.expires_at < expires_at
        and renew_at(other) <= now
    )


def renewal_verdict(progress: LoginProgress, renewed: TokenGrant) -> tuple[bool, int]:
    """Whether to hold a renewal, and how many in a row have not moved the expiry: one whose
    expirationTime did not move is retried once; the second in a row is taken as refused
    (else it would be retried in a loop)."""
    assert progress.grant is not None
    moved = renewed.expires_at > progress.grant.expires_at
    accepted = moved or progress.unmoved_renewals == 0
    return accepted, 0 if moved or not accepted else 1


class Policy:
    """Timings: when to renew a new token, how long to wait after a failure or a success."""

    def __init__(
        self,
        refresh_interval_s: float,
        rng: random.Random | None = None,
        *,
        account_check_interval_s: float = DEFAULT_TOKEN_PROBE_INTERVAL_S,
        interval_fits: bool = True,
        window_s: float = BUDGET_WINDOW_S,
        lead_floor_s: float = RENEW_LEAD_FLOOR_S,
    ) -> None:
        """`interval_fits`: renewing every login at `refresh_interval_s` fits the budget
        (`interval_fits` below). `window_s`: the budget window, the time-scale of the margins;
        `lead_floor_s`: ORCA_RENEW_LEAD_FLOOR, in Tradovate's time."""
        self.window_s = window_s
        self.scale = TimeScale(window_s)
        self._lead_floor_s = lead_floor_s
        self.refresh_interval_s = refresh_interval_s
        self.account_check_interval_s = account_check_interval_s
        self.interval_fits = interval_fits
        self._rng = rng or random.Random()
        self._backoff = EqualJitterBackoff(cap=RETRY_BACKOFF_CAP_S, base=RETRY_BACKOFF_BASE_S)

    def renew_at(self, grant: TokenGrant) -> float:
        """Tradovate's advice: about 15 minutes before expiry (the same share of a shorter
        life), jittered so that logins spread over the hour. ORCA_REFRESH_INTERVAL is a target,
        honoured (sooner) only while the address's renewal budget allows it for every login."""
        lifetime = max(grant.lifetime_s, 1.0)
        before = self.renew_before_expiry_s(lifetime)
        jitter = lifetime * self._rng.uniform(
            -RENEW_JITTER_LIFETIME_FRACTION, RENEW_JITTER_LIFETIME_FRACTION
        )
        due = grant.expires_at - before + jitter
        if self.interval_fits:
            due = min(due, grant.issued_at + self.refresh_interval_s)
        return due

    def renew_before_expiry_s(self, lifetime_s: float) -> float:
        return renew_before_expiry_s(lifetime_s, self.window_s)

    def lead_floor_s(self, lifetime_s: float) -> float:
        """ORCA_RENEW_LEAD_FLOOR on the budget window's time-scale, but never so late that
        the renewal could land after the token's key has expired."""
        return max(self.scale.of(self._lead_floor_s), _latest_lead_s(lifetime_s, self.window_s))

    def relogin_instead(self, login: Login, grant: TokenGrant, slot_at: float) -> bool:
        """A `relogin` login logs in again rather than wait for a renewal slot that frees only
        later than the floor before its token expires (or never: beyond the budget)."""
        floor_at = grant.expires_at - self.lead_floor_s(grant.lifetime_s)
        return login.when_budget_short == "relogin" and slot_at >= floor_at

    @property
    def stagger_s(self) -> float:
        """Between renewals that wait for the same freed slot, on the window's time-scale."""
        return self.scale.of(BUDGET_STAGGER_S)

    def key_margin_s(self, lifetime_s: float) -> float:
        return key_margin_s(lifetime_s, self.window_s)

    def account_check_due(self, progress: LoginProgress, now: float) -> bool:
        """Time to list the accounts with the held token again: that call has no address
        budget and is refused once Tradovate closed the session (a third login elsewhere, a
        password change), so a dead token leaves Redis within one check period."""
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

    def delay_after_success(self, progress: LoginProgress, now: float, renew_at: float) -> float:
        """Until renewal (`renew_at`, the group's schedule) or the next account check is due,
        whichever comes first."""
        check_due = (progress.accounts_fetched_at or now) + self.account_check_interval_s
        return max(min(renew_at, check_due) - now, 1.0)

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
            key_left_s = held.expires_at - self.key_margin_s(held.lifetime_s) - now
            return min(float(backoff), max(1.0, key_left_s / 2))
        return float(backoff)


@dataclass(frozen=True)
class RenewalCapacity:
    """Renewals `logins` need in one budget window, each renewed every `period_s`, against the
    `usable` renewals the address may spend there. One computation for the daemon (whether
    ORCA_REFRESH_INTERVAL fits, `budget.capacity`) and for `doctor`'s estimate."""

    logins: int
    period_s: float
    window_s: float
    usable: float

    @property
    def needed(self) -> float:
        return self.logins * self.window_s / max(self.period_s, 1.0)

    @property
    def short(self) -> bool:
        return self.needed > self.usable + 1e-9

    @property
    def keeps_alive(self) -> int:
        """How many logins the address keeps alive by renewal alone."""
        return keeps_alive(self.usable, self.period_s, self.window_s)


def keeps_alive(usable: float, period_s: float, window_s: float) -> int:
    """How many logins `usable` renewals a window keep alive, each renewed every `period_s`."""
    return int(usable * max(period_s, 0.0) / window_s + 1e-9)


def interval_fits(
    refresh_interval_s: float, logins: int, lifetime_s: float, window_s: float, usable: int
) -> bool:
    """Whether renewing `logins` every `refresh_interval_s` (or sooner, as the advice asks)
    stays within the `usable` renewals of a window: ORCA_REFRESH_INTERVAL is honoured only then."""
    period_s = renewal_period_s(lifetime_s, refresh_interval_s, interval_fits=True)
    return not RenewalCapacity(logins, period_s, window_s, usable).short


def renewal_period_s(
    lifetime_s: float,
    refresh_interval_s: float,
    *,
    interval_fits: bool,
    window_s: float = BUDGET_WINDOW_S,
) -> float:
    """How often one login is renewed: its life less the advice's margin, or sooner at
    ORCA_REFRESH_INTERVAL when that fits the budget."""
    period = lifetime_s - renew_before_expiry_s(lifetime_s, window_s)
    return min(period, refresh_interval_s) if interval_fits else period


def renew_before_expiry_s(lifetime_s: float, window_s: float = BUDGET_WINDOW_S) -> float:
    """15 minutes (the same share of a shorter simulated life), but never later than
    `_latest_lead_s`."""
    scaled = TimeScale(window_s).of(RENEW_BEFORE_EXPIRY_S)
    advice = min(scaled, lifetime_s * RENEW_BEFORE_EXPIRY_FRACTION)
    return max(advice, _latest_lead_s(lifetime_s, window_s))


def _latest_lead_s(lifetime_s: float, window_s: float) -> float:
    """A renewal lands before the token's key expires (its TTL ends a margin before the token
    does, on the window's time-scale), with a scheduler's slack (time-scaled too, but never
    under what a scheduler running late in real time needs)."""
    slack_s = TimeScale(window_s).of(RENEW_SLACK_S, at_least_s=RENEW_SLACK_MIN_S)
    return key_margin_s(lifetime_s, window_s) + slack_s


def room_to_log_in(
    state: LoginProgress, beyond: bool, used: Callable[[], int], usable: int
) -> bool:
    """Whether a `wait` login whose token ran out for want of renewals may log in again: only
    when the schedule keeps it (it is not `beyond` what the budget keeps alive) and a renewal
    slot is free now; else it would open a session only to lapse again. `used` is asked last:
    it is a Redis round trip."""
    if not state.lapsed_for_budget or state.login.when_budget_short != "wait":
        return True
    return not beyond and used() < usable
