"""The settle step of an attempt (`refresh.refresher`): what acting came to (`Acted`) is applied
to the login's progress, the group's schedule replans once, the keeper writes Redis, and then the
reporter says what happened. Nothing here asks Tradovate."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import redis

from daemon import notes as note
from daemon.constants import PARK_RECHECK_S, PASSWORD_WARNING_S
from daemon.outcomes import Outcome
from daemon.refresh.accounts import Listing
from daemon.refresh.keeper import RedisKeeper
from daemon.refresh.policy import Action, Decision, Policy
from daemon.refresh.progress import LOGIN_DEFERRED, Attempt, LoginProgress
from daemon.refresh.reporter import Reporter
from daemon.refresh.schedule import RenewalSchedule
from daemon.store.fence import LeaseLost
from daemon.store.health import RedisHealth
from daemon.store.tokens import InvalidTokenError
from daemon.tradovate import CaptchaRequired, PenaltyTicket, TokenGrant

NOT_OWNER_RETRY_S = 1.0
LAPSED_WAITING = "token lapsed for want of renewals: logs in when the budget has room"
LIFETIME_UNKNOWN = "lifetime unknown, renewing"
LIFETIME_UNKNOWN_RETRY_S = 1.0
AT_ONCE_S = 0.0  # the next attempt follows this one's answer without a wait
LOGIN_DEFERRED_SAID = "no token: the group's failed-login budget (or a lockout) holds the login"


@dataclass(frozen=True)
class Acted:
    """What acting on a decision came to."""

    outcome: Outcome  # LOGIN or RENEW (a new token), KEPT (nothing asked, or the list), else why
    grant: TokenGrant | None = None  # the new token
    listing: Listing | None = None  # what /account/list answered
    error: Exception | None = None  # a failure's cause
    wait_s: float = 0.0  # DEFERRED or PENALTY: until the next attempt
    event: str = "auth.deferred"  # ... what the log says of the wait
    dead: str | None = None  # the held token is dead: why (its keys go, the login logs in)
    stop_renewals_s: float = 0.0  # the group renews nothing for this long (a ticket, a captcha)
    unmoved: int = 0  # renewals in a row whose expirationTime did not move
    said: tuple[str, float] | None = None  # a wait said before acting (budget.relogin)
    penalty_endpoint: str | None = None
    spent: tuple[float, ...] | None = None  # the renewal window's spends, as a spend found them


class Settlement:
    def __init__(
        self,
        *,
        policy: Policy,
        schedule: RenewalSchedule,
        keeper: RedisKeeper,
        reporter: Reporter,
        redis_health: RedisHealth,
        captcha_park_s: float,
        budget_group: str,
        clock: Callable[[], float],
    ) -> None:
        self.policy = policy
        self.schedule = schedule
        self.keeper = keeper
        self.reporter = reporter
        self.redis_health = redis_health
        self.captcha_park_s = captcha_park_s
        self.budget_group = budget_group
        self.clock = clock

    def settle(self, state: LoginProgress, decision: Decision, acted: Acted) -> Attempt:
        """Apply what acting came to; the attempt, and when the next one is due."""
        now = self.clock()
        if acted.outcome is Outcome.PARKED:
            until, reason = state.wait_ends(now)
            attempt = Attempt(Outcome.PARKED, min(until - now, PARK_RECHECK_S), until, reason)
            return self._next(state, attempt, now)
        if acted.outcome is Outcome.NOT_OWNER:
            if acted.error is not None:
                self.reporter.not_written(state.name, str(acted.error))
            return self._next(state, Attempt(Outcome.NOT_OWNER, NOT_OWNER_RETRY_S), now)
        if acted.dead is not None:
            assert state.grant is not None
            dead, state.grant = state.grant.access_token, None
            state.unmoved_renewals = 0
            self.keeper.drop_dead_token(state, dead, acted.dead)
        if acted.grant is not None:  # held before the group replans around it
            state.grant = acted.grant
        advised, renew_at = self.schedule.settle(
            state,
            now,
            new_token=acted.grant is not None,
            stop_renewals_until=now + acted.stop_renewals_s if acted.stop_renewals_s else 0.0,
            spent=acted.spent,
        )
        if acted.said is not None:
            self._say_wait(state, now, *acted.said)
        if acted.grant is None:
            return self._settled(state, decision, acted, renew_at, now)
        added = self._hold(state, acted, advised, now)
        attempt = self._settled(state, decision, acted, renew_at, now)
        news = password_news(acted.grant, now)  # said once the keys are written
        self.reporter.password_news(state.name, acted.grant, added, news, note.password(*news))
        return attempt

    def _settled(
        self, state: LoginProgress, decision: Decision, acted: Acted, renew_at: float, now: float
    ) -> Attempt:
        if acted.outcome is Outcome.DEFERRED:
            return self._deferred(state, acted, now)
        if acted.outcome is Outcome.PENALTY:
            assert isinstance(acted.error, PenaltyTicket)
            state.p_ticket = acted.error.ticket
            self.reporter.penalty(state.name, acted.wait_s)
            return self._next(state, Attempt(Outcome.PENALTY, max(acted.wait_s, 1.0)), now)
        if not acted.outcome.ok:
            assert acted.error is not None
            logging_in = decision.action is Action.LOGIN
            return self._failed(state, acted.error, acted.outcome, now, logging_in=logging_in)
        return self._succeeded(state, acted, renew_at, now)

    def _hold(self, state: LoginProgress, acted: Acted, advised: float, now: float) -> list[str]:
        """The new token's progress; the notes it added."""
        grant = acted.grant
        assert grant is not None
        notes = notes_with(state.notes, grant, now)
        added, state.notes = [note for note in notes if note not in state.notes], notes
        state.advised_renew_at = advised
        state.lapsed_for_budget, state.unmoved_renewals = False, acted.unmoved
        if state.confirm_by_renewal:  # renewed: the list is asked again with the fresh token
            state.confirm_by_renewal, state.accounts_fetched_at = False, None
        return added

    def _deferred(self, state: LoginProgress, acted: Acted, now: float) -> Attempt:
        if acted.event == LAPSED_WAITING:
            state.lapsed_for_budget = True
            if state.last_error != LAPSED_WAITING:  # said once, not at every look for room
                state.last_error = LAPSED_WAITING
                self._write_status(state)
            wait_s = acted.wait_s
            return self._next(
                state, Attempt(Outcome.DEFERRED, wait_s, now + wait_s, Outcome.DEFERRED), now
            )
        if state.grant is None and acted.event == LOGIN_DEFERRED:
            # No token in Redis and no login allowed yet: the status says why, once a wait.
            said = f"{LOGIN_DEFERRED_SAID} for {acted.wait_s:.0f} s"
            if not (state.last_error or "").startswith(LOGIN_DEFERRED_SAID):
                state.last_outcome, state.last_error = Outcome.DEFERRED, said
                state.next_attempt_at = now + acted.wait_s
                self._write_status(state)
        if isinstance(acted.error, PenaltyTicket):
            self.reporter.penalty(state.name, acted.error.wait_s, endpoint="renew")
        elif isinstance(acted.error, CaptchaRequired):
            self.reporter.renewal_captcha(state.name, self.captcha_park_s, self.budget_group)
        elif acted.dead is None:
            self.reporter.waiting(acted.event, state.name, acted.wait_s)
        return self._next(state, Attempt(Outcome.DEFERRED, acted.wait_s), now)

    def _say_wait(self, state: LoginProgress, now: float, event: str, slot_in_s: float) -> None:
        if event == "budget.short":
            grant = state.grant
            assert grant is not None
            self.reporter.budget_short(state, now, slot_in_s, self.budget_group)
            state.lapsed_for_budget = now + slot_in_s >= grant.expires_at
        else:
            self.reporter.waiting(event, state.name, slot_in_s)

    def _succeeded(
        self, state: LoginProgress, acted: Acted, renew_at: float, now: float
    ) -> Attempt:
        """A token held (new, or kept): the account list's answer applied, every key written
        (under the names known when the list could not be had), then the report."""
        assert state.grant is not None
        listing = acted.listing or Listing()
        if listing.confirm is not None:  # an older token refused: one renewal decides, now
            state.accounts_fetched_at, state.confirm_by_renewal = now, True
            return self._next(state, Attempt(Outcome.DEFERRED, AT_ONCE_S), now)
        news = self._apply_listing(state, listing, now)
        source = acted.outcome
        if not state.grant.lifetime_known:  # no key is written with a guessed lifetime
            state.last_outcome, state.last_error = source, LIFETIME_UNKNOWN
            self._write_status(state)
            return self._next(state, Attempt(Outcome.DEFERRED, LIFETIME_UNKNOWN_RETRY_S), now)
        delay = max(min(renew_at, self._check_due(state, now)) - now, 1.0)
        try:
            names = self.keeper.write(state, success=source, next_attempt_at=now + delay)
        except (LeaseLost, InvalidTokenError, redis.RedisError) as error:
            return self._write_failed(state, error, now)
        self.redis_health.succeeded()
        self._report_listing(state, news)
        if source is not Outcome.KEPT:
            self.reporter.new_token(state, names)
        if listing.fault is not None:  # the token is written under the names known
            return self._failed(state, listing.fault, listing.fault.outcome, now)
        after_failures = state.failures
        state.failures, state.last_error, state.last_outcome = 0, None, source
        state.session_unused, state.last_success_at = False, now
        self.reporter.succeeded(state, source, after_failures, delay)
        return self._next(state, Attempt(source, delay), now)

    def _check_due(self, state: LoginProgress, now: float) -> float:
        """When the account list is asked next: at once for a token whose accounts were never
        listed (adopted, or a check a renewal left for the next attempt), else a period after the
        last answer."""
        fetched = state.accounts_fetched_at
        if fetched is None and state.accounts_paused_until <= now:
            return now
        return (fetched or now) + self.policy.account_check_interval_s

    def _apply_listing(self, state: LoginProgress, listing: Listing, now: float) -> Listing:
        """The list's answer in the login's progress; what of it is news to report: the names
        refused for the first time, and (`names`) a paused list allowed again."""
        if listing.names is not None:
            state.accounts, state.accounts_fetched_at, state.accounts_denials = (
                listing.names,
                now,
                0,
            )
            said = state.notes
            state.drop_notes(note.REFUSED_NAME)  # refused while the list gives it, no longer
            refused = tuple(
                name
                for name in listing.refused
                if state.add_note(note.refused_name(name)) and note.refused_name(name) not in said
            )
            allowed = state.drop_notes(note.ACCOUNTS_NOT_LISTED)
            return Listing(names=listing.names if allowed else None, refused=refused)
        if listing.paused is not None:
            state.accounts_denials += 1
            if listing.paused_why is Outcome.CAPTCHA:
                pause_s = self.captcha_park_s
            else:
                pause_s = self.policy.accounts_pause_s(state.accounts_denials)
            state.accounts_paused_until = now + pause_s
            state.drop_notes(note.ACCOUNTS_NOT_LISTED)
            state.add_note(
                note.accounts_not_listed(f"{listing.paused_why}: {listing.paused}", pause_s)
            )
        return listing

    def _report_listing(self, state: LoginProgress, news: Listing) -> None:
        if news.refused:
            self.reporter.names_refused(state.name, news.refused)
        if news.names is not None:
            self.reporter.accounts_allowed(state.name)
        if news.paused is not None and news.paused_why is not None:
            pause_s = state.accounts_paused_until - self.clock()
            self.reporter.accounts_denied(state, news.paused, news.paused_why, pause_s)

    def _write_failed(self, state: LoginProgress, error: Exception, now: float) -> Attempt:
        if isinstance(error, LeaseLost):
            self.reporter.not_written(state.name, str(error))
            return self._next(state, Attempt(Outcome.NOT_OWNER, NOT_OWNER_RETRY_S), now)
        if isinstance(error, InvalidTokenError):
            return self._failed(state, error, Outcome.INVALID_TOKEN, now)
        return self._failed(state, error, Outcome.REDIS, now)

    def _failed(
        self,
        state: LoginProgress,
        error: Exception,
        outcome: Outcome,
        now: float,
        *,
        logging_in: bool = False,
    ) -> Attempt:
        if outcome is Outcome.REDIS:
            assert isinstance(error, redis.RedisError)
            self.redis_health.failed(error)
        state.failures += 1
        delay, park_s = self.policy.after_failure(
            outcome, state, now, captcha_park_s=self.captcha_park_s, logging_in=logging_in
        )
        if park_s is not None:  # nobody shortens it; kept in the status across restarts
            state.parked_until, state.park_reason = now + park_s, outcome
        elif outcome.held_back:  # kept in the status: a restart does not retry sooner
            state.not_before = now + delay
        state.last_outcome, state.last_error = outcome, str(error)
        state.next_attempt_at = None if math.isinf(delay) else now + delay
        if outcome is not Outcome.REDIS:  # tells operators and `status` a login is failing
            self._write_status(state)
        self.reporter.failed(state, error, outcome, delay)
        until = state.parked_until if park_s is not None else state.not_before
        attempt = Attempt(outcome, min(delay, PARK_RECHECK_S), until if until > now else None)
        return self._next(state, attempt, now)

    def _write_status(self, state: LoginProgress) -> None:
        """The login's status alone (a failure, a wait); best effort, Redis may be the fault."""
        self.keeper.write_status(state)

    def _next(self, state: LoginProgress, attempt: Attempt, now: float) -> Attempt:
        forever = attempt.until == math.inf  # Closed: until an operator acts
        state.next_attempt_at = None if forever else now + attempt.delay_s
        return attempt


def password_news(grant: TokenGrant, now: float) -> tuple[float | None, str | None]:
    """What a grant says of the password: when it expires, if within a week, and Tradovate's
    `hibpHint` (None, None: nothing to say)."""
    expires_at = grant.password_expires_at
    expiring = expires_at is not None and expires_at - now <= PASSWORD_WARNING_S
    return (expires_at if expiring else None, grant.hibp_hint or None)


def notes_with(notes: tuple[str, ...], grant: TokenGrant, now: float) -> tuple[str, ...]:
    """The login's notes once it holds `grant`: an unfinished sign-up (userStatus) and a
    password expiring within a week or a `hibpHint`, each as this grant says; one that no
    longer holds goes, the others stay."""
    unconfirmed = None if grant.user_status is None else note.unconfirmed(grant.user_status)
    kept = tuple(  # a note still current keeps its place
        said
        for said in notes
        if not note.is_password(said) and (not note.is_unconfirmed(said) or said == unconfirmed)
    )
    if unconfirmed is not None and unconfirmed not in kept:
        kept += (unconfirmed,)
    news = password_news(grant, now)
    return kept if news == (None, None) else (*kept, note.password(*news))
