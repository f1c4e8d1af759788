"""The refresher: does what the policy (`refresh.policy`) says for one login, asking Tradovate
and writing Redis. Each attempt returns when the next one is due, so a scheduler only has to keep
the appointment.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import redis
import structlog

from daemon.config import Settings
from daemon.constants import (
    ASSUMED_TOKEN_LIFETIME_S,
    BUDGET_WINDOW_S,
    LOGIN_FAILURE_SHARE,
)
from daemon.metrics import Metrics
from daemon.outcomes import LoginState, Outcome
from daemon.refresh.policy import (
    Action,
    Attempt,
    LoginProgress,
    Policy,
    RenewalCapacity,
    next_action,
)
from daemon.sinks.alerts import Alerter
from daemon.sinks.audit import AuditRecorder
from daemon.store.budget import LOGIN_FAILURE, RENEW, AddressBudget
from daemon.store.client import get_many
from daemon.store.fence import LeaseLost, fenced_delete
from daemon.store.health import RedisHealth
from daemon.store.lease import Fence
from daemon.store.status import LoginStatus, read_statuses, write_status
from daemon.store.tokens import (
    InvalidTokenError,
    TokenSet,
    fingerprint,
    md_token_key,
    read_token_keys,
    token_key,
    write_login_tokens,
)
from daemon.token_format import parse_expiration_time, token_problem
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
from daemon.values import SAFE_NAME

log = structlog.get_logger("daemon.refresh")


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


NOT_LEADER_RETRY_S = 1.0
BUDGET_STAGGER_S = 2.0  # between logins waiting for the same freed renewal slot (real hour)


class _MayNotAct(Exception):
    """The lease ran out (or a stop began) during an attempt: no session is opened."""


class _AuthDeferred(Exception):
    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s


class Refresher:
    def __init__(
        self,
        settings: Settings,
        tradovate: TradovateClient,
        redis_client: redis.Redis,
        *,
        metrics: Metrics,
        instance: str,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        redis_health: RedisHealth | None = None,
        alerts: Alerter | None = None,
        audit: AuditRecorder | None = None,
        may_act: Callable[[str], bool] = lambda login: True,
        fence: Callable[[str], Fence | None] = lambda login: None,
    ) -> None:
        """`may_act(login)` says whether this instance may call Tradovate and write for the
        login now (it holds the login's lease, certainly, and is not stopping); `fence(login)`
        is the lease every write of the login is checked against in Redis."""
        self.settings = settings
        self.redis_health = redis_health or RedisHealth(settings.redis.target(), metrics)
        self.alerts = alerts
        self.audit = audit
        self.tradovate = tradovate
        self.redis = redis_client
        self.metrics = metrics
        self.instance = instance
        self.clock = clock
        self.pacer = AuthPacer(settings.auth_rate_limit, clock=clock)
        self.budget = AddressBudget(
            redis_client,
            settings.budget_group,
            {
                RENEW: settings.renew_budget_per_hour,
                LOGIN_FAILURE: settings.login_failure_budget_per_hour,
            },
            window_s=settings.budget_window_s,
        )
        self.policy = Policy(
            settings.refresh_interval_s, rng, probe_interval_s=settings.token_probe_interval_s
        )
        # ORCA_REFRESH_INTERVAL is honoured only while renewing every login that often fits.
        self.policy.interval_fits = not RenewalCapacity(
            len(settings.logins),
            self.policy.renewal_period_s(ASSUMED_TOKEN_LIFETIME_S),
            settings.budget_window_s,
            self.budget.usable(RENEW),
        ).short
        self.may_act = may_act
        self.fence = fence
        self.states = {login.name: LoginProgress(login) for login in settings.logins}

    def capacity(self, now: float, logins: int | None = None) -> dict[str, Any]:
        """Renewals `logins` (all configured) need in one budget window against what the
        address may spend (Tradovate's limit less a reserve), from the tokens held (80 minutes
        before any)."""
        lifetimes = [s.grant.lifetime_s for s in self.states.values() if s.grant is not None]
        capacity = RenewalCapacity(
            len(self.states) if logins is None else logins,
            self.policy.renewal_period_s(min(lifetimes, default=self._assumed_lifetime_s())),
            self.settings.budget_window_s,
            self.budget.usable(RENEW),
        )
        return {
            "group": self.budget.group,
            "window_s": self.settings.budget_window_s,
            "renew_limit": self.budget.limits[RENEW],
            "renew_usable": capacity.usable,
            "renew_needed": round(capacity.needed, 1),
            "renew_used": self.budget.used(RENEW, now),
            "login_failure_limit": self.budget.limits[LOGIN_FAILURE],
            "login_failure_used": self.budget.used(LOGIN_FAILURE, now),
            "short": capacity.short,
            "keeps_alive": capacity.keeps_alive,
        }

    def configured_capacity(self) -> tuple[int, int]:
        """The renewals an hour this address may spend and the logins they keep alive, from
        configuration alone (tokens assumed to live 80 minutes of a one-hour window): what other
        instances weigh this one by when they share the logins."""
        window_s = self.settings.budget_window_s
        usable = self.budget.usable(RENEW)
        period_s = self.policy.renewal_period_s(self._assumed_lifetime_s())
        return usable, RenewalCapacity(0, period_s, window_s, usable).keeps_alive

    def _assumed_lifetime_s(self) -> float:
        """80 minutes of Tradovate's hour, on the budget window's time-scale."""
        return ASSUMED_TOKEN_LIFETIME_S * self.settings.budget_window_s / BUDGET_WINDOW_S

    def adopt_from_redis(self, names: list[str] | None = None) -> int:
        """Take over tokens already in Redis (a restart, a previous owner) so that the first
        refresh renews them instead of opening new Tradovate sessions. Returns how many."""
        now = self.clock()
        names = list(self.states) if names is None else names
        keys = read_token_keys(self.redis, names, with_ttl=False)
        md_tokens = get_many(self.redis, [md_token_key(name) for name in names])
        statuses = read_statuses(self.redis, names)
        adopted = 0
        for key, md_token, recorded in zip(keys, md_tokens, statuses, strict=True):
            name, token = key.name, key.token
            state = self.states[name]
            self._restore_backoff(state, recorded, now)
            # Only the expiry recorded with this very token counts: nothing is decoded.
            expiry = recorded.expiry_of(token) if recorded and token is not None else None
            if state.grant is not None or recorded is None or token is None:
                continue
            if expiry is None or expiry <= now:
                continue
            issued_at = recorded.issued_at_s()
            state.grant = TokenGrant(
                access_token=token,
                expires_at=expiry,
                issued_at=issued_at if issued_at is not None else now,
                source=Outcome.ADOPTED,
                md_access_token=md_token if token_problem(md_token) is None else None,
            )
            # Renewed when due, as if this instance had issued it (a restart or a takeover must
            # not spend renewals in a burst); with no record of its issue, renewed at once. The
            # first attempt lists the accounts, which confirms the token is still alive.
            state.renew_at = self.policy.renew_at(state.grant) if issued_at is not None else now
            state.accounts = recorded.accounts
            adopted += 1
            log.info(
                "token.adopted",
                login=name,
                fingerprint=fingerprint(token),
                expires_at=iso(expiry),
                accounts=len(state.accounts),
            )
        return adopted

    @staticmethod
    def _restore_backoff(state: LoginProgress, recorded: LoginStatus | None, now: float) -> None:
        """A rejected password's back-off outlives the process: under Restart=on-failure a
        crash loop must not retry it at every start."""
        if recorded is None or recorded.last_outcome is not Outcome.REJECTED:
            return
        due = parse_expiration_time(recorded.next_attempt_at)
        if due is not None and due > now and state.not_before <= now:
            state.not_before, state.failures = due, recorded.failures
            state.last_outcome, state.last_error = recorded.last_outcome, recorded.last_error
            log.info("login.backoff_restored", login=state.name, until=recorded.next_attempt_at)

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
            if attempt.outcome.counted:
                self.metrics.refresh_duration.observe(time.perf_counter() - started)
                self.metrics.refresh_total.labels(login=name, outcome=attempt.outcome).inc()
            state.next_attempt_at = self.clock() + attempt.delay_s
            return attempt

    def _attempt(self, state: LoginProgress, *, force: bool) -> Attempt:
        now = self.clock()
        action = next_action(state, now, force=force)
        if action is Action.WAIT_PARKED:
            return Attempt(Outcome.PARKED, max(state.parked_until, state.not_before) - now)
        if not self.may_act(state.name):
            return Attempt(Outcome.NOT_LEADER, NOT_LEADER_RETRY_S)
        try:
            source = self._ensure_token(state, action, now)
            self._ensure_accounts_and_write(state, source)
        except _AuthDeferred as deferred:
            log.debug("auth.deferred", login=state.name, wait_s=round(deferred.wait_s, 1))
            return Attempt(Outcome.DEFERRED, deferred.wait_s)
        except PenaltyTicket as penalty:
            state.p_ticket = penalty.ticket
            log.warning("tradovate.penalty", login=state.name, wait_s=penalty.wait_s)
            return Attempt(Outcome.PENALTY, max(penalty.wait_s, 1.0))
        except (LeaseLost, _MayNotAct) as error:
            log.warning("token.not_written", login=state.name, reason=str(error))
            return Attempt(Outcome.NOT_LEADER, NOT_LEADER_RETRY_S)
        except redis.RedisError as error:
            self.redis_health.failed(error)
            return self._failed(state, error, Outcome.REDIS)
        except TradovateError as error:
            if isinstance(error, CaptchaRequired):
                state.parked_until = now + self.settings.captcha_park_s
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
            log.info("budget.login_deferred", login=state.name, wait_s=round(spend.wait_s))
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
                log.info("budget.relogin", login=state.name, wait_s=round(spend.wait_s))
                return False
            self._budget_short(state, now, spend.wait_s)
            # When a slot frees, the login whose token dies first asks first: each waiting
            # login is staggered by how many due ones expire before it.
            stagger_s = BUDGET_STAGGER_S * self.settings.budget_window_s / BUDGET_WINDOW_S
            wait_s = spend.wait_s + stagger_s * self._earlier_due(state, now)
            raise _AuthDeferred(max(1.0, min(wait_s, grant.expires_at - now)))
        try:
            self._hold(state, self.tradovate.renew(grant.access_token))
            return True
        except TokenRefused as refused:
            self._drop_dead_token(state, refused)
        except PenaltyTicket as penalty:
            self.budget.block(RENEW, penalty.wait_s, now)  # for every login of the address
            log.warning(
                "tradovate.penalty", login=state.name, endpoint="renew", wait_s=penalty.wait_s
            )
            raise _AuthDeferred(max(penalty.wait_s, 1.0)) from None
        if not self.may_act(state.name):  # the renewal took a while: still the owner?
            raise _MayNotAct("the lease is no longer certainly held")
        return False

    def _earlier_due(self, state: LoginProgress, now: float) -> int:
        """How many other logins held here are due for renewal and expire before this one."""
        assert state.grant is not None
        expires_at = state.grant.expires_at
        return sum(
            1
            for other in self.states.values()
            if other is not state
            and other.grant is not None
            and other.renew_at <= now
            and other.grant.expires_at < expires_at
        )

    def _budget_short(self, state: LoginProgress, now: float, wait_s: float) -> None:
        """The renewal budget is spent. If no slot frees before the token dies, say so once
        per token: it will lapse, and the login logs in again after it (`wait`)."""
        grant = state.grant
        assert grant is not None
        if now + wait_s < grant.expires_at or state.budget_warned_for == grant.access_token:
            return
        state.budget_warned_for = grant.access_token
        log.warning(
            "budget.short",
            login=state.name,
            expires_at=iso(grant.expires_at),
            slot_in_s=round(wait_s),
            group=self.budget.group,
            hint="renewals this address may spend run out: add an instance on another address",
        )
        if self.alerts is not None:
            self.alerts.send(
                f"⏳ {state.name}: the address's renewal budget is spent; its token expires at "
                f"{iso(grant.expires_at)}, before a renewal slot frees. It will log in again "
                "after it lapses (when_budget_short = wait). Add an instance on another address."
            )

    def _hold(self, state: LoginProgress, grant: TokenGrant) -> None:
        state.grant = grant
        state.renew_at = self.policy.renew_at(grant)

    def _ensure_accounts_and_write(self, state: LoginProgress, source: Outcome) -> None:
        """List accounts with every new token and every probe period, then write every key. A
        token refused on the account list is dead: its keys are deleted at once and it is never
        written again; any other account-list fault still writes the token under the names
        already known."""
        assert state.grant is not None
        now = self.clock()
        new_token = source is not Outcome.KEPT
        accounts_error: TradovateError | None = None
        if new_token or self.policy.probe_due(state, now):
            try:
                accounts = self.tradovate.list_accounts(state.grant.access_token)
            except TokenRefused as refused:
                self._drop_dead_token(state, refused)
                raise
            except TradovateError as error:
                accounts_error = error
            else:
                state.accounts = self._sane_accounts(state, [a.name for a in accounts])
                state.accounts_fetched_at = now
        self.write(state, success=source)
        if new_token and self.audit is not None:
            grant = state.grant
            self.audit.record(
                state.name,
                self.owned_names(state),
                grant.access_token,
                issued_at=grant.issued_at,
                expires_at=grant.expires_at,
                source=grant.source,
                instance=self.instance,
            )
        if accounts_error is not None:
            raise accounts_error

    def _sane_accounts(self, state: LoginProgress, listed: list[str]) -> tuple[str, ...]:
        """The account names a key may be written under: letters, digits, `_ - .`, at most
        64 characters. Anything else (`*`, `:`, spaces, newlines, 5,000 characters) is refused
        with one warning, never written."""
        sane = []
        for name in dict.fromkeys(listed):
            if SAFE_NAME.match(name):
                sane.append(name)
            elif self._note(state, f"refused account name {name[:40]!r}"):
                log.warning("account.name_refused", login=state.name, name=name[:64])
        return tuple(sane)

    def owned_names(self, state: LoginProgress) -> tuple[str, ...]:
        """The names this login writes: its own, and each of its accounts that no other login
        owns. A configured login's own name belongs to that login alone; an account listed by
        two logins belongs to the first in configuration order (the other skips it, with one
        warning and a status note, until the lists change)."""
        names = [state.name]
        for account in state.accounts:
            if account == state.name:
                continue
            owner = self.login_of(account)
            if owner in (None, state.name):
                names.append(account)
            elif self._note(state, f"{account} is written by {owner}"):
                log.warning(
                    "account.owned_by_another", login=state.name, account=account, owner=owner
                )
        return tuple(names)

    @staticmethod
    def _note(state: LoginProgress, note: str) -> bool:
        """Add a note to the login's status; True the first time (warn once, not per write)."""
        if note in state.notes:
            return False
        state.notes = (*state.notes, note)
        return True

    def login_of(self, name: str) -> str | None:
        """The login whose token is written under `name` (a login's own name, or an account's:
        the first login in configuration order that lists it)."""
        if name in self.states:
            return name
        return next((s.name for s in self.states.values() if name in s.accounts), None)

    def _drop_dead_token(self, state: LoginProgress, refused: TokenRefused) -> None:
        """Tradovate refused the held token (its session was closed, or it was renewed away):
        no reader may get it from Redis a moment longer. The keys that still hold it go now,
        fenced like any write; the next attempt logs in again, within the pacing and budgets."""
        assert state.grant is not None
        dead, state.grant = state.grant.access_token, None
        names = self.owned_names(state)
        deleted, error = 0, None
        try:
            stale = [
                key.name
                for key in read_token_keys(self.redis, names, with_ttl=False)
                if key.token == dead
            ]
            deleted = fenced_delete(
                self.redis,
                self.fence(state.name),
                [key for name in stale for key in (token_key(name), md_token_key(name))],
            )
        except (redis.RedisError, LeaseLost) as failure:
            error = str(failure)
        log.warning(
            "token.refused",
            login=state.name,
            fingerprint=fingerprint(dead),
            reason=str(refused),
            keys_deleted=deleted,
            error=error,
        )

    def reconcile(self) -> list[str]:
        """One pipelined pass: every login whose token key is missing or holds another token
        than the one held here gets its keys rewritten (Redis restarted empty, a FLUSHALL, an
        operator's DEL). Tradovate is not asked. Returns the logins restored."""
        now = self.clock()
        held = [
            s
            for s in self.states.values()
            if s.grant is not None
            and s.grant.expires_at > now
            and not s.lock.locked()
            and self.may_act(s.name)
        ]
        if not held:
            return []
        names = [self.owned_names(state) for state in held]
        found = iter(read_token_keys(self.redis, [n for g in names for n in g], with_ttl=False))
        restored: list[str] = []
        renamed: list[str] = []
        for state, group in zip(held, names, strict=True):
            values = [next(found).token for _ in group]
            assert state.grant is not None
            intact = all(value == state.grant.access_token for value in values)
            # Names change when another login takes or leaves an account: status rewritten.
            if intact and tuple(group) == state.written_names:
                continue
            if not state.lock.acquire(blocking=False):
                continue  # a refresh is writing this login right now
            try:
                self.write(state)
            except InvalidTokenError:
                continue  # too close to expiry for a key; the next refresh replaces it
            except LeaseLost:
                log.warning("token.not_written", login=state.name, reason="lease lost")
                continue
            finally:
                state.lock.release()
            (renamed if intact else restored).append(state.name)
        if restored:
            log.info("token.restored", logins=restored)
        if renamed:
            log.info("token.names_changed", logins=renamed)
        return restored

    def forget_tokens(self, names: list[str] | None = None) -> None:
        """Drop the held tokens of these logins (all) when their leases went elsewhere: their
        owner now holds them, and if a lease comes back the token is adopted afresh."""
        for name in self.states if names is None else names:
            state = self.states[name]
            with state.lock:
                state.grant, state.failures, state.alerted = None, 0, False
                state.auth_slot_at, state.next_attempt_at = None, None

    def write(self, state: LoginProgress, *, success: Outcome | None = None) -> int:
        """Write the login's held token under every name, with its status, in one round trip.
        With `success`, the status written is that of the success (so `last_success_at` lands
        with the token it describes). Returns the TTL."""
        grant = state.grant
        assert grant is not None
        tokens = TokenSet(
            login=state.name,
            access_token=grant.access_token,
            expires_at=grant.expires_at,
            lifetime_s=grant.lifetime_s,
            md_access_token=grant.md_access_token,
            accounts=self.owned_names(state)[1:],
        )
        now = self.clock()
        status = self.status(state, now)
        if success is not None:
            status = replace(
                status,
                state=LoginState.OK,
                failures=0,
                last_outcome=success,
                last_error=None,
                last_success_at=iso(now),
                next_attempt_at=iso(now + self.policy.delay_after_success(state, now)),
            )
        ttl = write_login_tokens(
            self.redis,
            tokens,
            now=now,
            max_ttl_s=self.settings.token_ttl_s,
            status=status,
            fence=self.fence(state.name),
        )
        state.written_names = tokens.names
        return ttl

    def _succeeded(self, state: LoginProgress, source: Outcome) -> Attempt:
        assert state.grant is not None
        now = self.clock()
        grant = state.grant
        if state.failures:
            log.info("token.recovered", login=state.name, after_attempts=state.failures)
        if state.alerted and self.alerts is not None:
            self.alerts.send(
                f"✅ {state.name}: token refreshed again after {state.failures} attempts"
            )
        state.alerted, state.session_unused = False, False
        state.failures, state.last_error, state.last_outcome = 0, None, source
        state.last_success_at = now
        self.metrics.last_success.labels(login=state.name).set(now)
        self.metrics.token_expiry.labels(login=state.name).set(grant.expires_at)
        delay = self.policy.delay_after_success(state, now)
        log.info(
            "token.refreshed",
            login=state.name,
            outcome=source,
            fingerprint=fingerprint(grant.access_token),
            expires_at=iso(grant.expires_at),
            ttl=int(grant.expires_at - now),
            accounts=len(state.accounts),
            next_attempt_in=round(delay, 1),
        )
        return Attempt(source, delay)

    def _failed(self, state: LoginProgress, error: Exception, outcome: Outcome) -> Attempt:
        state.failures += 1
        delay = self.policy.delay_after_failure(
            outcome,
            state.failures,
            captcha_park_s=self.settings.captcha_park_s,
            session_unused=state.session_unused,
        )
        state.last_outcome, state.last_error = outcome, str(error)
        state.next_attempt_at = self.clock() + delay
        if outcome is Outcome.REJECTED:  # kept in the status: a restart does not retry sooner
            state.not_before = state.next_attempt_at
        token_valid_for = (
            int(state.grant.expires_at - self.clock()) if state.grant is not None else None
        )
        if outcome is Outcome.REDIS:
            # The login is fine and its token is held: Redis's state is logged (once per change)
            # and restored by the reconcile pass; the attempt itself is detail.
            log.debug(
                "token.write_failed", login=state.name, error=str(error), attempt=state.failures
            )
            return Attempt(outcome, delay)
        if not state.alerted and self.alerts is not None:
            state.alerted = True
            self.alerts.send(
                f"⚠️ {state.name}: token refresh failing ({outcome}: {error}); "
                f"next attempt in {delay:.0f} s; current token valid for "
                f"{'no' if token_valid_for is None else token_valid_for} s"
                + (
                    " — parked: a person must log in on Tradovate"
                    if outcome is Outcome.CAPTCHA
                    else ""
                )
            )
        log.log(
            logging.ERROR if outcome.needs_a_human else logging.WARNING,
            "token.refresh_failed",
            login=state.name,
            outcome=outcome,
            error=str(error),
            attempt=state.failures,
            next_attempt_in=round(delay, 1),
            token_valid_for=token_valid_for,
        )
        # Tell operators (and `status`) a login is failing; best effort, Redis may be the fault.
        with contextlib.suppress(redis.RedisError, LeaseLost):
            write_status(
                self.redis,
                self.status(state, self.clock()),
                self.settings.token_ttl_s,
                fence=self.fence(state.name),
            )
        return Attempt(outcome, delay)

    def status(self, state: LoginProgress, now: float) -> LoginStatus:
        grant = state.grant
        return LoginStatus(
            login=state.name,
            state=state.state(now),
            fingerprint=fingerprint(grant.access_token) if grant else None,
            expires_at=iso(grant.expires_at) if grant else None,
            issued_at=iso(grant.issued_at) if grant else None,
            notes=state.notes,
            when_budget_short=state.login.when_budget_short,
            source=grant.source if grant else None,
            accounts=self.owned_names(state)[1:],
            failures=state.failures,
            last_outcome=state.last_outcome,
            last_error=state.last_error,
            last_success_at=iso(state.last_success_at),
            next_attempt_at=iso(state.next_attempt_at),
            updated_at=iso(now),
            instance=self.instance,
        )
