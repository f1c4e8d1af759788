"""The refresher: does what the policy (`refresh.policy`) says for one login, asking Tradovate;
the keeper (`refresh.keeper`) writes Redis and the reporter (`refresh.reporter`) says what
happened. Each attempt returns when the next one is due, so a scheduler only has to keep the
appointment. Its collaborators are built by `refresh.build`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import redis

from daemon.constants import (
    LOCKOUT_S,
    PARK_RECHECK_S,
)
from daemon.outcomes import Outcome
from daemon.refresh.accounts import AccountsCheck
from daemon.refresh.keeper import RedisKeeper
from daemon.refresh.names import AccountNames
from daemon.refresh.policy import (
    Action,
    Policy,
    earlier_due,
    next_action,
    renewal_verdict,
    room_to_log_in,
)
from daemon.refresh.progress import Attempt, AuthDeferred, LoginProgress, notes_with
from daemon.refresh.reporter import Reporter
from daemon.refresh.schedule import RenewalSchedule
from daemon.refresh.signin import SignIn
from daemon.store.budget import LOGIN_FAILURE, RENEW, AddressBudget, Spend
from daemon.store.fence import LeaseLost
from daemon.store.health import RedisHealth
from daemon.store.tokens import InvalidTokenError
from daemon.tradovate import (
    AccountsDenied,
    CaptchaRequired,
    LockoutWarning,
    PenaltyTicket,
    Stopped,
    TokenGrant,
    TokenRefused,
    TradovateClient,
    TradovateError,
)

NOT_OWNER_RETRY_S = 1.0
LAPSED_WAITING = "token lapsed for want of renewals: logs in when the budget has room"
ROOM_RECHECK_S = 900.0  # a lapsed `wait` login looks for room this often (Tradovate's clock)
LIFETIME_UNKNOWN = "lifetime unknown, renewing"
LIFETIME_UNKNOWN_RETRY_S = 1.0


class _MayNotAct(Exception):
    """The lease ran out (or a stop began) during an attempt: no session is opened."""


class Refresher:
    def __init__(
        self,
        states: Mapping[str, LoginProgress],
        tradovate: TradovateClient,
        *,
        policy: Policy,
        sign_in: SignIn,
        budget: AddressBudget,
        names: AccountNames,
        accounts: AccountsCheck,
        schedule: RenewalSchedule,
        keeper: RedisKeeper,
        reporter: Reporter,
        redis_health: RedisHealth,
        captcha_park_s: float,
        clock: Callable[[], float] = time.time,
        may_act: Callable[[str], bool] = lambda login: True,
    ) -> None:
        """`may_act(login)`: this instance holds the login's lease, certainly, and no stop began."""
        self.states = states
        self.tradovate = tradovate
        self.policy = policy
        self.sign_in = sign_in
        self.budget = budget
        self.names = names
        self.accounts = accounts
        self.schedule = schedule
        self.keeper = keeper
        self.reporter = reporter
        self.redis_health = redis_health
        self.captcha_park_s = captcha_park_s
        self.clock = clock
        self.may_act = may_act
        self._renewing = threading.Lock()  # renewals are sent one at a time

    def refresh(
        self, name: str, *, force: bool = False, verify: bool = False, operator: bool = False
    ) -> Attempt:
        """One attempt for one login. Never raises for anything Tradovate or Redis does.
        `force` renews now; `verify` (a reader saw a 401) checks the held token with Tradovate
        first and spends a renewal or a login only when it is refused; `operator` (`tokens
        refresh NAME`) tries a login held back by the rejected ladder (or Closed) once at once,
        but never shortens a park (captcha, TemporaryLocked, 423, 429)."""
        state = self.states[name]
        with state.lock:
            if verify:
                state.accounts_fetched_at = None
            if operator and state.not_before > self.clock():
                state.not_before = 0.0  # the budget still bounds it: failed logins are counted
            started = time.perf_counter()
            attempt = self._attempt(state, force=force)
            self.reporter.attempted(name, attempt, time.perf_counter() - started)
            forever = attempt.until == math.inf  # Closed: until an operator acts
            state.next_attempt_at = None if forever else self.clock() + attempt.delay_s
            return attempt

    def forget_tokens(self, names: list[str]) -> None:
        """Their leases went elsewhere: the new owner holds the tokens (adopted if they return)."""
        for name in names:
            state = self.states[name]
            with state.lock:
                state.grant, state.failures = None, 0
                state.auth_slot_at, state.next_attempt_at = None, None
            self.reporter.forget(name)

    def _attempt(self, state: LoginProgress, *, force: bool) -> Attempt:
        now = self.clock()
        self.schedule.replan(now)
        action = next_action(state, now, renew_at=self.schedule.renew_at(state), force=force)
        if action is Action.WAIT_PARKED:
            until, reason = state.wait_ends(now)
            return Attempt(Outcome.PARKED, min(until - now, PARK_RECHECK_S), until, reason)
        if not self.may_act(state.name):
            return Attempt(Outcome.NOT_OWNER, NOT_OWNER_RETRY_S)
        if action is Action.LOGIN and not self._room_to_log_in(state, now):
            if state.last_error != LAPSED_WAITING:  # said once, not at every look for room
                state.last_error = LAPSED_WAITING
                self.keeper.write_status(state)
            wait_s = self.policy.scale.of(ROOM_RECHECK_S)
            return Attempt(Outcome.DEFERRED, wait_s, now + wait_s, Outcome.DEFERRED)
        try:
            source = self._ensure_token(state, action, now)
            self._ensure_accounts_and_write(state, source)
        except AuthDeferred as deferred:
            self.reporter.waiting("auth.deferred", state.name, deferred.wait_s)
            return Attempt(Outcome.DEFERRED, deferred.wait_s)
        except PenaltyTicket as penalty:
            state.p_ticket = penalty.ticket
            self.reporter.penalty(state.name, penalty.wait_s)
            return Attempt(Outcome.PENALTY, max(penalty.wait_s, 1.0))
        except (LeaseLost, _MayNotAct, Stopped) as error:
            self.reporter.not_written(state.name, str(error))
            return Attempt(Outcome.NOT_OWNER, NOT_OWNER_RETRY_S)
        except redis.RedisError as error:
            self.redis_health.failed(error)
            return self._failed(state, error, Outcome.REDIS)
        except TradovateError as error:
            if isinstance(error, LockoutWarning):  # the whole group's logins: Tradovate's hour
                self.budget.block(LOGIN_FAILURE, self.policy.scale.of(LOCKOUT_S), now)
            return self._failed(state, error, error.outcome, logging_in=action is Action.LOGIN)
        except InvalidTokenError as error:
            return self._failed(state, error, Outcome.INVALID_TOKEN)
        self.redis_health.succeeded()
        return self._succeeded(state, source)

    def _room_to_log_in(self, state: LoginProgress, now: float) -> bool:
        used, usable = (lambda: self.budget.used(RENEW, now)), self.budget.usable(RENEW)
        beyond = self.schedule.beyond(state.name)
        state.lapsed_for_budget = not room_to_log_in(state, beyond, used, usable)
        return not state.lapsed_for_budget

    def _ensure_token(self, state: LoginProgress, action: Action, now: float) -> Outcome:
        if action is Action.KEEP:
            return Outcome.KEPT
        if action is Action.RENEW and self._renew(state, now):
            return Outcome.RENEW
        grant = self.sign_in.send(state, now)
        self._hold(state, grant)
        return Outcome.LOGIN

    def _renew(self, state: LoginProgress, now: float) -> bool:
        """Renew within the group's budget. False: log in instead (the token was refused, or no
        renewal frees for it in time and it is `relogin`). AuthDeferred: wait (`wait`)."""
        grant = state.grant
        assert grant is not None
        never = Spend(ok=False, wait_s=grant.expires_at - now, member="")  # beyond the budget
        beyond = self.schedule.beyond(state.name)
        spend = never if beyond else self.budget.try_spend(RENEW, now, who=state.name)
        if not spend.ok:
            if self.policy.relogin_instead(state.login, grant, now + spend.wait_s):
                self.reporter.waiting("budget.relogin", state.name, spend.wait_s)
                return False
            self.reporter.budget_short(state, now, spend.wait_s, self.budget.group)
            state.lapsed_for_budget = now + spend.wait_s >= grant.expires_at
            # When a slot frees, the login whose token dies first asks first (staggered).
            due_first = earlier_due(self.states.values(), state, now, self.schedule.renew_at)
            stagger_s = self.policy.stagger_s * due_first
            wait_s = spend.wait_s + stagger_s
            raise AuthDeferred(max(1.0, min(wait_s, grant.expires_at - now)))
        try:
            with self._renewing:  # sent one at a time: a captcha or a ticket stops the next
                if (stopped_s := self.schedule.renewals_stopped_for(self.clock())) > 0:
                    raise AuthDeferred(stopped_s)
                renewed = self.tradovate.renew(grant.access_token)
        except TokenRefused as refused:
            self.keeper.drop_dead_token(state, str(refused))
        except PenaltyTicket as penalty:
            self.schedule.stop_renewals(self.clock() + penalty.wait_s)
            self.budget.block(RENEW, penalty.wait_s, now)  # for every login of the address
            self.reporter.penalty(state.name, penalty.wait_s, endpoint="renew")
            raise AuthDeferred(max(penalty.wait_s, 1.0)) from None
        except CaptchaRequired:
            # Every renewal would meet it: the group renews nothing, logins follow the rule.
            self.schedule.stop_renewals(self.clock() + self.captcha_park_s)
            self.budget.block(RENEW, self.captcha_park_s, now)
            self.reporter.renewal_captcha(state.name, self.captcha_park_s, self.budget.group)
            return self._renew(state, now)
        else:
            accepted, state.unmoved_renewals = renewal_verdict(state, renewed)
            if accepted:
                self._hold(state, renewed)
                return True
            self.keeper.drop_dead_token(state, "renewals do not move expirationTime")
        if not self.may_act(state.name):  # the renewal took a while: still the owner?
            raise _MayNotAct("the lease is no longer certainly held")
        return False

    def _hold(self, state: LoginProgress, grant: TokenGrant) -> None:
        previous, state.lapsed_for_budget = state.grant, False
        if grant.md_access_token is None:
            grant = _with_md_token(grant, previous)
        now = self.clock()
        notes = notes_with(state.notes, grant, now)
        added, state.notes = [note for note in notes if note not in state.notes], notes
        self.reporter.password_news(state.name, grant, added)
        state.grant = grant
        # A lifetime nobody said is learnt from the first renewal, as soon as the budget allows.
        state.advised_renew_at = self.policy.renew_at(grant) if grant.lifetime_known else now
        self.schedule.replan(now)  # a new token moves its renewal into the group's schedule

    def _ensure_accounts_and_write(self, state: LoginProgress, source: Outcome) -> None:
        """List accounts with every new token and check period (`refresh.accounts`), then write
        every key: under the names already known when the list could not be had."""
        assert state.grant is not None
        now = self.clock()
        if not state.grant.lifetime_known:  # no key is written with a guessed lifetime
            state.last_outcome, state.last_error = source, LIFETIME_UNKNOWN
            self.keeper.write_status(state)
            raise AuthDeferred(LIFETIME_UNKNOWN_RETRY_S)
        new_token = source is not Outcome.KEPT
        accounts_error = None
        if self.accounts.due(state, now, new_token=new_token):
            try:
                accounts_error = self.accounts.check(state, now)
            except AccountsDenied as denied:
                return self._decide_denied(state, denied, now)
        self._write_success(state, source)
        if new_token:
            self.reporter.new_token(state, self.names.owned(state))
        if accounts_error is not None:
            raise accounts_error

    def _decide_denied(self, state: LoginProgress, denied: AccountsDenied, now: float) -> None:
        """A token older than a minute refused on /account/list: one renewal (inside the
        budget) decides. Refused, the session was closed: its keys go, the next attempt logs in.
        Accepted, the list is asked again with the fresh token, where a refusal is a
        permission problem. No room to renew: the keys stay, the list is asked at the next
        check."""
        if self._renew(state, now):
            self._ensure_accounts_and_write(state, Outcome.RENEW)
        elif state.grant is None:  # refused: the keys are gone, the next attempt logs in
            raise TokenRefused(f"{denied}; the renewal that checked the token was refused")
        else:  # a `relogin` login with no renewal to spend: the keys stay until the next check
            self._write_success(state, Outcome.KEPT)

    def _write_success(self, state: LoginProgress, source: Outcome) -> None:
        now = self.clock()
        due_s = self.policy.delay_after_success(state, now, self.schedule.renew_at(state))
        self.keeper.write(state, success=source, next_attempt_at=now + due_s)

    def _succeeded(self, state: LoginProgress, source: Outcome) -> Attempt:
        now = self.clock()
        after_failures = state.failures
        state.failures, state.last_error, state.last_outcome = 0, None, source
        state.session_unused, state.last_success_at = False, now
        delay = self.policy.delay_after_success(state, now, self.schedule.renew_at(state))
        self.reporter.succeeded(state, source, after_failures, delay)
        return Attempt(source, delay)

    def _failed(
        self, state: LoginProgress, error: Exception, outcome: Outcome, *, logging_in: bool = False
    ) -> Attempt:
        now = self.clock()
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
            self.keeper.write_status(state)
        self.reporter.failed(state, error, outcome, delay)
        until = state.parked_until if park_s is not None else state.not_before
        return Attempt(outcome, min(delay, PARK_RECHECK_S), until if until > now else None)


def _with_md_token(grant: TokenGrant, previous: TokenGrant | None) -> TokenGrant:
    """A renewal without `mdAccessToken`: the md token held serves on while its own expiry
    outlasts the new access token (so `mdtoken:*` never goes missing before the next renewal);
    else the access token itself, as Tradovate's market-data tutorial does."""
    md, md_expires_at = grant.access_token, grant.expires_at
    if previous is not None and previous.md_access_token not in (None, previous.access_token):
        held_until = previous.md_expires_at or previous.expires_at
        if held_until >= grant.expires_at:
            md, md_expires_at = previous.md_access_token, held_until
    return replace(grant, md_access_token=md, md_expires_at=md_expires_at)
