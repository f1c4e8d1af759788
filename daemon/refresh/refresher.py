"""The refresher: does what the policy (`refresh.policy`) says for one login, asking Tradovate;
the keeper (`refresh.keeper`) writes Redis and the reporter (`refresh.reporter`) says what
happened. Each attempt returns when the next one is due, so a scheduler only has to keep the
appointment. Its collaborators are built by `refresh.build`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import redis

from daemon.constants import BUDGET_WINDOW_S, LOGIN_FAILURE_SHARE
from daemon.outcomes import Outcome
from daemon.refresh.keeper import RedisKeeper
from daemon.refresh.names import AccountNames
from daemon.refresh.policy import Action, Attempt, Policy, earlier_due, next_action
from daemon.refresh.progress import LoginProgress
from daemon.refresh.reporter import Reporter
from daemon.store.budget import LOGIN_FAILURE, RENEW, AddressBudget
from daemon.store.fence import LeaseLost
from daemon.store.health import RedisHealth
from daemon.store.tokens import InvalidTokenError
from daemon.tradovate import (
    AuthPacer,
    CaptchaRequired,
    PenaltyTicket,
    RateLimited,
    TokenGrant,
    TokenRefused,
    TradovateClient,
    TradovateError,
    TradovateUnavailable,
)

NOT_OWNER_RETRY_S = 1.0
LIFETIME_UNKNOWN = "lifetime unknown, renewing"
LIFETIME_UNKNOWN_RETRY_S = 1.0
BUDGET_STAGGER_S = 2.0  # between logins waiting for the same freed renewal slot (real hour)


class _MayNotAct(Exception):
    """The lease ran out (or a stop began) during an attempt: no session is opened."""


class _AuthDeferred(Exception):
    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s


class Refresher:
    def __init__(
        self,
        states: Mapping[str, LoginProgress],
        tradovate: TradovateClient,
        *,
        policy: Policy,
        pacer: AuthPacer,
        budget: AddressBudget,
        names: AccountNames,
        keeper: RedisKeeper,
        reporter: Reporter,
        redis_health: RedisHealth,
        captcha_park_s: float,
        clock: Callable[[], float] = time.time,
        may_act: Callable[[str], bool] = lambda login: True,
    ) -> None:
        """`may_act(login)` says whether this instance may call Tradovate and write for the
        login now (it holds the login's lease, certainly, and is not stopping)."""
        self.states = states
        self.tradovate = tradovate
        self.policy = policy
        self.pacer = pacer
        self.budget = budget
        self.names = names
        self.keeper = keeper
        self.reporter = reporter
        self.redis_health = redis_health
        self.captcha_park_s = captcha_park_s
        self.clock = clock
        self.may_act = may_act

    def login_of(self, name: str) -> str | None:
        return self.names.login_of(name)

    def refresh(self, name: str, *, force: bool = False, verify: bool = False) -> Attempt:
        """One attempt for one login. Never raises for anything Tradovate or Redis does.
        `force` renews now; `verify` (a reader saw a 401) checks the held token with Tradovate
        first and spends a renewal or a login only when it is refused."""
        state = self.states[name]
        with state.lock:
            if verify:
                state.accounts_fetched_at = None
            started = time.perf_counter()
            attempt = self._attempt(state, force=force)
            self.reporter.attempted(name, attempt, time.perf_counter() - started)
            state.next_attempt_at = self.clock() + attempt.delay_s
            return attempt

    def forget_tokens(self, names: list[str]) -> None:
        """Drop the held tokens of these logins when their leases went elsewhere: their owner
        now holds them, and if a lease comes back the token is adopted afresh."""
        for name in names:
            state = self.states[name]
            with state.lock:
                state.grant, state.failures = None, 0
                state.auth_slot_at, state.next_attempt_at = None, None
            self.reporter.forget(name)

    def _attempt(self, state: LoginProgress, *, force: bool) -> Attempt:
        now = self.clock()
        action = next_action(state, now, force=force)
        if action is Action.WAIT_PARKED:
            return Attempt(Outcome.PARKED, max(state.parked_until, state.not_before) - now)
        if not self.may_act(state.name):
            return Attempt(Outcome.NOT_OWNER, NOT_OWNER_RETRY_S)
        try:
            source = self._ensure_token(state, action, now)
            self._ensure_accounts_and_write(state, source)
        except _AuthDeferred as deferred:
            self.reporter.waiting("auth.deferred", state.name, deferred.wait_s)
            return Attempt(Outcome.DEFERRED, deferred.wait_s)
        except PenaltyTicket as penalty:
            state.p_ticket = penalty.ticket
            self.reporter.penalty(state.name, penalty.wait_s)
            return Attempt(Outcome.PENALTY, max(penalty.wait_s, 1.0))
        except (LeaseLost, _MayNotAct) as error:
            self.reporter.not_written(state.name, str(error))
            return Attempt(Outcome.NOT_OWNER, NOT_OWNER_RETRY_S)
        except redis.RedisError as error:
            self.redis_health.failed(error)
            return self._failed(state, error, Outcome.REDIS)
        except TradovateError as error:
            if isinstance(error, CaptchaRequired):
                state.parked_until = now + self.captcha_park_s
            elif isinstance(error, RateLimited):
                self.pacer.block()
            return self._failed(state, error, error.outcome)
        except InvalidTokenError as error:
            return self._failed(state, error, Outcome.INVALID_TOKEN)
        self.redis_health.succeeded()
        return self._succeeded(state, source)

    def _ensure_token(self, state: LoginProgress, action: Action, now: float) -> Outcome:
        if action is Action.KEEP:
            return Outcome.KEPT
        if action is Action.RENEW and self._renew(state, now):
            return Outcome.RENEW
        if state.auth_slot_at is None:
            state.auth_slot_at = now + self.pacer.reserve()
        if state.auth_slot_at > now:
            raise _AuthDeferred(state.auth_slot_at - now)
        # Only failed logins count against the address; a slot is taken before sending (the
        # outcome is unknown) and given back when the login succeeds.
        spend = self.budget.try_spend(
            LOGIN_FAILURE, now, who=state.name, share=LOGIN_FAILURE_SHARE, pending=True
        )
        if not spend.ok:
            self.reporter.waiting("budget.login_deferred", state.name, spend.wait_s)
            raise _AuthDeferred(max(spend.wait_s, 1.0))
        state.auth_slot_at = None
        ticket, state.p_ticket = state.p_ticket, None
        # From here a session may be open: if what comes back cannot be used, the next login
        # waits as long as after a rejected password (no churn of sessions).
        state.session_unused = True
        counted = True
        try:
            grant = self.tradovate.login(state.login, p_ticket=ticket)
            counted = False
        except PenaltyTicket as penalty:
            self.budget.block(LOGIN_FAILURE, penalty.wait_s, now)
            raise
        except TradovateUnavailable:
            # A timeout, a reset or a 5xx is no failed login of Tradovate's counting: an outage
            # must not stall every login of the address for an hour.
            counted = False
            raise
        finally:
            self.budget.settle(LOGIN_FAILURE, spend, self.clock(), counted=counted)
        self._hold(state, grant)
        return Outcome.LOGIN

    def _renew(self, state: LoginProgress, now: float) -> bool:
        """Renew within the address's budget. False: log in instead (the token was refused, or
        the budget is spent and this login is marked `relogin`). Raises _AuthDeferred to wait
        for a slot, or for the token's expiry when none frees in time (`wait`)."""
        grant = state.grant
        assert grant is not None
        spend = self.budget.try_spend(RENEW, now, who=state.name)
        if not spend.ok:
            if state.login.when_budget_short == "relogin":
                self.reporter.waiting("budget.relogin", state.name, spend.wait_s)
                return False
            self.reporter.budget_short(state, now, spend.wait_s, self.budget.group)
            # When a slot frees, the login whose token dies first asks first: each waiting
            # login is staggered by how many due ones expire before it.
            stagger_s = BUDGET_STAGGER_S * self.budget.window_s / BUDGET_WINDOW_S
            wait_s = spend.wait_s + stagger_s * earlier_due(self.states.values(), state, now)
            raise _AuthDeferred(max(1.0, min(wait_s, grant.expires_at - now)))
        try:
            self._hold(state, self.tradovate.renew(grant.access_token))
            return True
        except TokenRefused as refused:
            self.keeper.drop_dead_token(state, str(refused))
        except PenaltyTicket as penalty:
            self.budget.block(RENEW, penalty.wait_s, now)  # for every login of the address
            self.reporter.penalty(state.name, penalty.wait_s, endpoint="renew")
            raise _AuthDeferred(max(penalty.wait_s, 1.0)) from None
        if not self.may_act(state.name):  # the renewal took a while: still the owner?
            raise _MayNotAct("the lease is no longer certainly held")
        return False

    def _hold(self, state: LoginProgress, grant: TokenGrant) -> None:
        state.grant = grant
        # A lifetime nobody said is learnt from the first renewal, as soon as the budget allows.
        state.renew_at = self.policy.renew_at(grant) if grant.lifetime_known else self.clock()

    def _ensure_accounts_and_write(self, state: LoginProgress, source: Outcome) -> None:
        """List accounts with every new token and every check period, then write every key. A
        token refused on the account list is dead: its keys are deleted at once and it is never
        written again; any other account-list fault still writes the token under the names
        already known."""
        assert state.grant is not None
        now = self.clock()
        if not state.grant.lifetime_known:  # no key is written with a guessed lifetime
            state.last_outcome, state.last_error = source, LIFETIME_UNKNOWN
            self.keeper.write_status(state)
            raise _AuthDeferred(LIFETIME_UNKNOWN_RETRY_S)
        new_token = source is not Outcome.KEPT
        accounts_error: TradovateError | None = None
        if new_token or self.policy.account_check_due(state, now):
            try:
                accounts = self.tradovate.list_accounts(state.grant.access_token)
            except TokenRefused as refused:
                self.keeper.drop_dead_token(state, str(refused))
                raise
            except TradovateError as error:
                accounts_error = error
            else:
                state.accounts = self.names.sane(state, [a.name for a in accounts])
                state.accounts_fetched_at = now
        self.keeper.write(state, success=source)
        if new_token:
            self.reporter.new_token(state, self.names.owned(state))
        if accounts_error is not None:
            raise accounts_error

    def _succeeded(self, state: LoginProgress, source: Outcome) -> Attempt:
        now = self.clock()
        after_failures = state.failures
        state.session_unused = False
        state.failures, state.last_error, state.last_outcome = 0, None, source
        state.last_success_at = now
        delay = self.policy.delay_after_success(state, now)
        self.reporter.succeeded(state, source, after_failures, delay)
        return Attempt(source, delay)

    def _failed(self, state: LoginProgress, error: Exception, outcome: Outcome) -> Attempt:
        state.failures += 1
        delay = self.policy.delay_after_failure(
            outcome,
            state.failures,
            captcha_park_s=self.captcha_park_s,
            session_unused=state.session_unused,
        )
        state.last_outcome, state.last_error = outcome, str(error)
        state.next_attempt_at = self.clock() + delay
        if outcome is Outcome.REJECTED:  # kept in the status: a restart does not retry sooner
            state.not_before = state.next_attempt_at
        self.reporter.failed(state, error, outcome, delay)
        return Attempt(outcome, delay)
