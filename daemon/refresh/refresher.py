"""The refresher: one attempt for one login, one way through.

1. Decide. The policy (`refresh.policy`) answers from the login's progress, the clock and the
   group's latest plan (`refresh.schedule`), which is read, never called.
2. Act. At most one Tradovate call (a login brings its new session's account list), within the
   login's lease and the group's budget; what it came to is data (`Acted`).
3. Settle (`refresh.settle`). The result is applied to the login's progress, the schedule
   replans once, the keeper (`refresh.keeper`) writes Redis, then the reporter
   (`refresh.reporter`) says what happened.

An answer that leads to another call (a token the account list refused is renewed to tell a
closed session from a permission problem; a refused token's login) is followed at once by the
next pass, within the same `refresh`: the keys of a closed session are missing only while its
login is asked. Each `refresh` returns when the next one is due, so a scheduler only has to keep
the appointment. Built by `refresh.build`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import redis

from daemon.constants import LOCKOUT_S
from daemon.outcomes import Outcome
from daemon.refresh.accounts import AccountsCheck
from daemon.refresh.keeper import RedisKeeper
from daemon.refresh.policy import Action, Decision, Policy
from daemon.refresh.progress import Attempt, AuthDeferred, LoginProgress
from daemon.refresh.reporter import Reporter
from daemon.refresh.schedule import RenewalSchedule
from daemon.refresh.settle import AT_ONCE_S, LAPSED_WAITING, Acted, Settlement
from daemon.refresh.signin import SignIn
from daemon.store.budget import LOGIN_FAILURE, RENEW, AddressBudget
from daemon.store.fence import LeaseLost
from daemon.store.health import RedisHealth
from daemon.store.lease import Holding
from daemon.tradovate import (
    CaptchaRequired,
    LockoutWarning,
    PenaltyTicket,
    Stopped,
    TokenGrant,
    TokenRefused,
    TradovateClient,
    TradovateError,
)

ROOM_RECHECK_S = 900.0  # a lapsed `wait` login looks for room this often (Tradovate's clock)
FOLLOW_UPS = 2  # passes that follow at once: a refused list's renewal, a refused renewal's login


class Refresher:
    def __init__(
        self,
        states: Mapping[str, LoginProgress],
        tradovate: TradovateClient,
        *,
        policy: Policy,
        sign_in: SignIn,
        budget: AddressBudget,
        accounts: AccountsCheck,
        schedule: RenewalSchedule,
        keeper: RedisKeeper,
        reporter: Reporter,
        redis_health: RedisHealth,
        captcha_park_s: float,
        clock: Callable[[], float] = time.time,
        holdings: Mapping[str, Holding] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        stopping: threading.Event | None = None,
    ) -> None:
        """`holdings`: the leases this instance holds (None: no leases, it may always act),
        certain until their `valid_until` on `monotonic`; nothing is asked once `stopping`."""
        self.states = states
        self.tradovate = tradovate
        self.policy = policy
        self.sign_in = sign_in
        self.budget = budget
        self.accounts = accounts
        self.schedule = schedule
        self.keeper = keeper
        self.reporter = reporter
        self.redis_health = redis_health
        self.captcha_park_s = captcha_park_s
        self.clock = clock
        self._holdings = holdings
        self._monotonic = monotonic
        self._stopping = stopping or threading.Event()
        self._renewing = threading.Lock()  # renewals are sent one at a time
        self._settlement = Settlement(
            policy=policy,
            schedule=schedule,
            keeper=keeper,
            reporter=reporter,
            redis_health=redis_health,
            captcha_park_s=captcha_park_s,
            budget_group=budget.group,
            clock=clock,
        )

    def job(self, name: str) -> float:
        """A scheduler's job: one attempt; when the next is due."""
        return self.refresh(name).delay_s

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
            attempt = self._attempt(state, force=force)
            for _ in range(FOLLOW_UPS):  # what an answer leads to, at once, under the same lock
                if attempt.delay_s != AT_ONCE_S:
                    break
                attempt = self._attempt(state, force=force)
            return attempt

    def _attempt(self, state: LoginProgress, *, force: bool) -> Attempt:
        """Decide, act, settle: one way through."""
        started = time.perf_counter()
        now = self.clock()
        others = self.states.values()
        decision = self.policy.decide(state, now, self.schedule.latest, force=force, others=others)
        acted = self._act(state, decision)
        attempt = self._settlement.settle(state, decision, acted)
        self.reporter.attempted(state.name, attempt, time.perf_counter() - started)
        return attempt

    def forget_tokens(self, names: list[str]) -> None:
        """Their leases went elsewhere: the new owner holds the tokens (adopted if they return)."""
        for name in names:
            state = self.states[name]
            with state.lock:
                state.grant, state.failures = None, 0
                state.auth_slot_at, state.next_attempt_at = None, None
            self.reporter.forget(name)

    # Act: one Tradovate call or none.

    def _act(self, state: LoginProgress, decision: Decision) -> Acted:
        action, now = decision.action, decision.now
        if action is Action.WAIT_PARKED:
            return Acted(Outcome.PARKED)
        if not self._may_act(state.name):
            return Acted(Outcome.NOT_OWNER)
        try:
            if action is Action.LOGIN:
                return self._log_in(state, decision)
            if action is Action.RENEW:
                return self._renew(state, decision)
            if action is Action.LIST_ACCOUNTS:
                assert state.grant is not None
                return Acted(Outcome.KEPT, listing=self.accounts.check(state.grant, now))
            return Acted(Outcome.KEPT)
        except AuthDeferred as deferred:
            return Acted(Outcome.DEFERRED, wait_s=deferred.wait_s, event=deferred.event)
        except PenaltyTicket as penalty:
            return Acted(Outcome.PENALTY, error=penalty, wait_s=penalty.wait_s)
        except (LeaseLost, Stopped) as error:
            return Acted(Outcome.NOT_OWNER, error=error)
        except redis.RedisError as error:
            return Acted(Outcome.REDIS, error=error)
        except TradovateError as error:
            if isinstance(error, LockoutWarning):  # the whole group's logins: Tradovate's hour
                self.budget.block(LOGIN_FAILURE, self.policy.scale.of(LOCKOUT_S), now)
            return Acted(error.outcome, error=error)

    def _may_act(self, name: str) -> bool:
        """This instance holds the login's lease, certainly, and no stop began."""
        if self._stopping.is_set():
            return False
        if self._holdings is None:
            return True
        held = self._holdings.get(name)
        return held is not None and self._monotonic() < held.valid_until

    def _log_in(self, state: LoginProgress, decision: Decision) -> Acted:
        """A login, and the new session's accounts (its keys cannot be written without them).
        A `wait` login that lapsed for want of renewals logs in only when a renewal slot is
        free now: else it would open a session only to lapse again."""
        now = decision.now
        if decision.needs_room and (
            decision.beyond or self.budget.used(RENEW, now) >= self.budget.usable(RENEW)
        ):
            wait_s = self.policy.scale.of(ROOM_RECHECK_S)
            return Acted(Outcome.DEFERRED, wait_s=wait_s, event=LAPSED_WAITING)
        grant = self.sign_in.send(state, now)
        return Acted(Outcome.LOGIN, grant=grant, listing=self.accounts.check(grant, now))

    def _renew(self, state: LoginProgress, decision: Decision) -> Acted:
        """Renew within the group's budget. No slot in time: a `relogin` login logs in instead,
        a `wait` one waits (the login whose token dies first asks first)."""
        grant, now = state.grant, decision.now
        assert grant is not None
        with self._renewing:  # one at a time: a captcha or a ticket stops the next before it asks
            slot_in_s, spent = self._renewal_slot_in(state.name, grant, decision)
            if slot_in_s <= 0:
                return replace(self._send_renewal(state, grant, now), spent=spent)
        if now + slot_in_s >= decision.relogin_from:
            relogin = self._log_in(state, decision)
            return replace(relogin, said=("budget.relogin", slot_in_s), spent=spent)
        wait_s = max(1.0, min(slot_in_s + decision.stagger_s, grant.expires_at - now))
        return Acted(Outcome.DEFERRED, wait_s=wait_s, said=("budget.short", slot_in_s), spent=spent)

    def _renewal_slot_in(
        self, name: str, grant: TokenGrant, decision: Decision
    ) -> tuple[float, tuple[float, ...] | None]:
        """How long until the group's budget lets this login renew (0: spent, renew now), and
        the window's spends as the budget holds them (None: not asked)."""
        now = decision.now
        if decision.beyond:
            return grant.expires_at - now, None
        stopped_s = self.schedule.renewals_stopped_until - now
        if stopped_s > 0:
            return stopped_s, None
        spend = self.budget.try_spend(RENEW, now, who=name)
        return (0.0 if spend.ok else spend.wait_s), spend.window

    def _send_renewal(self, state: LoginProgress, grant: TokenGrant, now: float) -> Acted:
        """The renewal itself; a ticket or a captcha blocks the group's renewals at once."""
        try:
            renewed = self.tradovate.renew(grant.access_token, held=grant)
        except TokenRefused as refused:
            return Acted(Outcome.DEFERRED, wait_s=AT_ONCE_S, dead=str(refused))
        except PenaltyTicket as penalty:
            self.budget.block(RENEW, penalty.wait_s, now)  # for every login of the address
            return Acted(
                Outcome.DEFERRED,
                error=penalty,
                wait_s=max(penalty.wait_s, 1.0),
                stop_renewals_s=penalty.wait_s,
                penalty_endpoint="renew",
            )
        except CaptchaRequired as captcha:
            # Every renewal would meet it: the group renews nothing, logins follow the rule.
            self.budget.block(RENEW, self.captcha_park_s, now)
            return Acted(
                Outcome.DEFERRED,
                error=captcha,
                wait_s=AT_ONCE_S,
                stop_renewals_s=self.captcha_park_s,
            )
        accepted, unmoved = _renewal_verdict(state, renewed.expires_at)
        if not accepted:
            return Acted(
                Outcome.DEFERRED, wait_s=AT_ONCE_S, dead="renewals do not move expirationTime"
            )
        return Acted(Outcome.RENEW, grant=renewed, unmoved=unmoved)


def _renewal_verdict(progress: LoginProgress, renewed_expires_at: float) -> tuple[bool, int]:
    """Whether to hold a renewal, and how many in a row have not moved the expiry: one whose
    expirationTime did not move is retried once; the second in a row is taken as refused
    (else it would be retried in a loop)."""
    assert progress.grant is not None
    moved = renewed_expires_at > progress.grant.expires_at
    accepted = moved or progress.unmoved_renewals == 0
    return accepted, 0 if moved or not accepted else 1
