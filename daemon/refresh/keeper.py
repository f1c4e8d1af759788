"""Keeping Redis in step with what the refresher holds: writing a login's keys and status (fenced
by its lease), deleting a dead token's keys, and restoring keys that went missing; which names a
login's keys carry (`AccountNames`) and what its status record says (`login_status`). It decides
nothing (what to write and when is the refresher's); Tradovate is never asked here."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import redis
import structlog

from daemon import notes as note
from daemon.constants import RECONCILE_FULL_CHECK_S
from daemon.logs import fingerprint
from daemon.outcomes import LoginState, Outcome
from daemon.refresh.progress import LoginProgress, credential
from daemon.store.client import count_existing
from daemon.store.fence import LeaseLost, fenced_delete
from daemon.store.lease import Fence, Holding
from daemon.store.status import LoginStatus, write_status
from daemon.store.tokens import (
    InvalidTokenError,
    TokenSet,
    md_token_key,
    read_token_keys,
    token_key,
    write_login_tokens,
)
from daemon.token_format import iso, token_problem

log = structlog.get_logger("daemon.refresh")

FOREIGN_WRITER_REPEAT_S = 3_600.0  # `token.foreign_writer` once per login and hour


class AccountNames:
    """Which names a login writes its token under: its own, and each of its accounts that no
    other login owns."""

    def __init__(self, states: Mapping[str, LoginProgress]) -> None:
        self._states = states

    def owned(
        self, state: LoginProgress, writers: Mapping[str, str] | None = None
    ) -> tuple[str, ...]:
        """The names this login writes: its own, and each of its accounts that no other login
        owns. A configured login's own name belongs to that login alone; an account listed by
        two logins belongs to the first in configuration order (the other skips it).
        `writers`: `writers()`, when the caller asks for many logins at once."""
        others = dict(self.skipped(state, writers))
        return (state.name, *(a for a in state.accounts if a != state.name and a not in others))

    def skipped(
        self, state: LoginProgress, writers: Mapping[str, str] | None = None
    ) -> tuple[tuple[str, str], ...]:
        """The login's accounts another login writes, each with that login, while it does."""
        writers = self.writers() if writers is None else writers
        return tuple(
            (account, writers[account])
            for account in state.accounts
            if account != state.name and writers.get(account, state.name) != state.name
        )

    def login_of(self, name: str) -> str | None:
        """The login whose token is written under `name` (a login's own name, or an account's:
        the first login in configuration order that lists it)."""
        return self.writers().get(name)

    def writers(self) -> dict[str, str]:
        """Every name to the login that writes it, in one pass over the logins: a search per
        account would cost logins times accounts for each reconcile."""
        found: dict[str, str] = {}
        for state in self._states.values():
            for account in state.accounts:
                found.setdefault(account, state.name)
        found.update((name, name) for name in self._states)
        return found


class RedisKeeper:
    def __init__(
        self,
        redis_client: redis.Redis,
        states: Mapping[str, LoginProgress],
        *,
        window_s: float,
        max_ttl_s: int,
        instance: str,
        clock: Callable[[], float],
        may_act: Callable[[str], bool],
        holdings: Mapping[str, Holding] | None,
        full_check_every_s: float = RECONCILE_FULL_CHECK_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`window_s`: the budget window, the time-scale of a key's margin; `holdings`: the
        leases held, whose fences every write carries (None: no leases, writes unfenced)."""
        self.redis = redis_client
        self._states = states
        self.names = AccountNames(states)
        self._window_s = window_s
        self._max_ttl_s = max_ttl_s
        self._instance = instance
        self._clock = clock
        self._may_act = may_act
        self._holdings = holdings
        self._foreign_said_at: dict[str, float] = {}
        self._skips_said: dict[str, tuple[tuple[str, str], ...]] = {}  # (account, its writer)
        self._full_every_s = full_check_every_s
        self._monotonic_now = monotonic
        self._full_due = 0.0  # the first pass reads every value
        self._naming = threading.Lock()

    def write(
        self,
        state: LoginProgress,
        *,
        success: Outcome | None = None,
        next_attempt_at: float | None = None,
    ) -> tuple[str, ...]:
        """Write the login's held token under every name, with its status, in one round trip.
        With `success`, the status written is that of the success (so `last_success_at` lands
        with the token it describes), next due at `next_attempt_at`. Returns the names."""
        grant = state.grant
        assert grant is not None
        # Names are decided and written one login at a time: two logins listing one account
        # would otherwise write it in another order than they decided who owns it.
        with self._naming:
            now = self._clock()
            status, names = self._status_and_names(state, now)
            tokens = TokenSet(
                login=state.name,
                access_token=grant.access_token,
                expires_at=grant.expires_at,
                lifetime_s=grant.lifetime_s,
                md_access_token=grant.md_access_token,
                accounts=names[1:],
                md_expires_at=grant.md_expires_at,
                window_s=self._window_s,
            )
            if success is not None:
                status = succeeded(status, success, now, next_attempt_at)
            write_login_tokens(
                self.redis,
                tokens,
                now=now,
                max_ttl_s=self._max_ttl_s,
                status=status,
                fence=self._fence(state.name),
            )
            if state.written_names != names:
                self._drop_left_names(state, names)
            state.written_names, state.written_token = names, grant.access_token
            return names

    def _fence(self, name: str) -> Fence | None:
        held = None if self._holdings is None else self._holdings.get(name)
        return None if held is None else held.fence

    def _drop_left_names(self, state: LoginProgress, names: tuple[str, ...]) -> None:
        """An account the list no longer gives (inactive, closed, archived, gone) loses the
        keys this login wrote for it; a key another writer holds now is left alone."""
        left = [name for name in state.written_names if name not in names]
        if not left or state.grant is None:
            return
        ours = {state.grant.access_token, state.written_token}
        keys = read_token_keys(self.redis, left, with_ttl=False)
        stale = [key.name for key in keys if key.token is not None and key.token in ours]
        fenced_delete(
            self.redis,
            self._fence(state.name),
            [key for name in stale for key in (token_key(name), md_token_key(name))],
        )
        if stale:
            log.info("token.names_dropped", login=state.name, names=stale)

    def write_status(self, state: LoginProgress) -> None:
        """The login's status alone (a failure); best effort, Redis may be the fault."""
        try:
            write_status(
                self.redis,
                self.status(state, self._clock()),
                self._max_ttl_s,
                fence=self._fence(state.name),
            )
        except (redis.RedisError, LeaseLost):
            return

    def status(self, state: LoginProgress, now: float) -> LoginStatus:
        return self._status_and_names(state, now)[0]

    def _status_and_names(
        self, state: LoginProgress, now: float
    ) -> tuple[LoginStatus, tuple[str, ...]]:
        """The login's status record and the names it writes; its notes name the accounts
        another login writes (said once in the log while that holds)."""
        writers = self.names.writers()
        skipped = self.names.skipped(state, writers)
        names = self.names.owned(state, writers)
        said = self._skips_said.get(state.name, ())
        for account, owner in skipped:
            if (account, owner) not in said:
                log.warning(
                    "account.owned_by_another", login=state.name, account=account, owner=owner
                )
        self._skips_said[state.name] = skipped  # under the login's lock: its entry alone
        notes = (*state.notes, *(note.written_by(account, owner) for account, owner in skipped))
        return login_status(state, now, names[1:], self._instance, notes), names

    def drop_dead_token(self, state: LoginProgress, dead: str, reason: str) -> None:
        """Tradovate refused the token `dead` (its session was closed, or it was renewed away):
        no reader may get it from Redis a moment longer. The keys that still hold it go now,
        fenced like any write; the next attempt logs in again, within the pacing and budgets."""
        names = self.names.owned(state)
        deleted, error = 0, None
        try:
            keys = read_token_keys(self.redis, names, with_ttl=False)
            stale = [key.name for key in keys if key.token == dead]
            deleted = fenced_delete(
                self.redis,
                self._fence(state.name),
                [key for name in stale for key in (token_key(name), md_token_key(name))],
            )
        except (redis.RedisError, LeaseLost) as failure:
            error = str(failure)
        log.warning(
            "token.refused",
            login=state.name,
            fingerprint=fingerprint(dead),
            reason=reason,
            keys_deleted=deleted,
            error=error,
        )

    def reconcile(self) -> list[str]:
        """Every login whose token key is missing or holds another token than the one held
        here gets its keys rewritten (Redis restarted empty, a FLUSHALL, an operator's DEL, an
        eviction, another writer). Each pass counts the keys with one EXISTS: a missing key is
        found at once, at a cost that does not grow with the keys. The values are read and
        compared only when one is missing, and once every `full_every_s` (another writer's
        value). Returns the logins restored."""
        now = self._clock()
        full = self._monotonic_now() >= self._full_due
        if full:
            self._full_due = self._monotonic_now() + self._full_every_s
        held = [
            s
            for s in self._states.values()
            if s.grant is not None
            and s.grant.expires_at > now
            and not s.lock.locked()
            and self._may_act(s.name)
        ]
        if not held:
            return []
        writers = self.names.writers()
        names = [self.names.owned(state, writers) for state in held]
        every = [name for group in names for name in group]
        if not full and count_existing(self.redis, [token_key(n) for n in every]) == len(every):
            self._write_renamed(held, names)
            return []
        found = iter(read_token_keys(self.redis, every, with_ttl=False))
        restored: list[str] = []
        renamed: list[str] = []
        for state, group in zip(held, names, strict=True):
            values = [next(found).token for _ in group]
            assert state.grant is not None
            intact = all(value == state.grant.access_token for value in values)
            self._say_foreign_writer(state, [v for v in values if v != state.grant.access_token])
            # Names change when another login takes or leaves an account: status rewritten.
            if intact and tuple(group) == state.written_names:
                continue
            if self._rewrite(state):
                (renamed if intact else restored).append(state.name)
        if restored:
            log.info("token.restored", logins=restored)
        if renamed:
            log.info("token.names_changed", logins=renamed)
        return restored

    def _write_renamed(self, held: list[LoginProgress], names: list[tuple[str, ...]]) -> None:
        """Logins whose names changed (another login took or left an account): status and
        keys written under the new names."""
        renamed = [
            state.name
            for state, group in zip(held, names, strict=True)
            if tuple(group) != state.written_names and self._rewrite(state)
        ]
        if renamed:
            log.info("token.names_changed", logins=renamed)

    def _rewrite(self, state: LoginProgress) -> bool:
        """Write the login's keys again, unless a refresh is writing them right now; whether
        they were written."""
        if not state.lock.acquire(blocking=False):
            return False
        try:
            self.write(state)
        except InvalidTokenError:
            return False  # too close to expiry for a key; the next refresh replaces it
        except LeaseLost:
            log.warning("token.not_written", login=state.name, reason="lease lost")
            return False
        finally:
            state.lock.release()
        return True

    def _say_foreign_writer(self, state: LoginProgress, others: list[str | None]) -> None:
        """A well-formed token this daemon did not write, in a key whose lease it holds: another
        program writes `token:*` (the seed's generator, a scheduled job). Two writers fight over
        the keys and spend the same renewal budget; the key is restored either way."""
        foreign = [token for token in others if token is not None and token_problem(token) is None]
        now = self._clock()
        said = self._foreign_said_at.get(state.name)
        if not foreign or (said is not None and now - said < FOREIGN_WRITER_REPEAT_S):
            return
        self._foreign_said_at[state.name] = now
        log.warning(
            "token.foreign_writer",
            login=state.name,
            fingerprint=fingerprint(foreign[0]),
            hint="another program writes token keys: switch it off (docs/migrating.md)",
        )


def login_state(state: LoginProgress, now: float) -> LoginState:
    holds = state.grant is not None and state.grant.expires_at > now
    if state.parked_until > now or (state.lapsed_for_budget and not holds):
        return LoginState.PARKED
    if state.failures:
        return LoginState.FAILING
    return LoginState.OK if holds else LoginState.PENDING


def succeeded(
    status: LoginStatus, outcome: Outcome, now: float, next_attempt_at: float | None
) -> LoginStatus:
    """The status of a success at `now`, next due at `next_attempt_at`."""
    return replace(
        status,
        state=LoginState.OK,
        failures=0,
        last_outcome=outcome,
        last_error=None,
        last_success_at=iso(now),
        next_attempt_at=None if next_attempt_at is None else iso(next_attempt_at),
    )


def login_status(
    state: LoginProgress,
    now: float,
    accounts: tuple[str, ...],
    instance: str,
    notes: tuple[str, ...] | None = None,
) -> LoginStatus:
    """The status record `orca:status:{login}` holds for this progress (`notes`: its own when
    None)."""
    grant = state.grant
    parked = state.parked_until > now
    return LoginStatus(
        login=state.name,
        state=login_state(state, now),
        fingerprint=fingerprint(grant.access_token) if grant else None,
        expires_at=iso(grant.expires_at) if grant else None,
        issued_at=iso(grant.issued_at) if grant else None,
        notes=state.notes if notes is None else notes,
        when_budget_short=state.login.when_budget_short,
        route=state.login.route,
        source=grant.source if grant else None,
        accounts=accounts,
        failures=state.failures,
        last_outcome=state.last_outcome,
        last_error=state.last_error,
        last_success_at=iso(state.last_success_at),
        next_attempt_at=iso(state.next_attempt_at),
        updated_at=iso(now),
        instance=instance,
        parked_until=iso(state.parked_until) if parked else None,
        park_reason=state.park_reason if parked else None,
        credential=credential(state) if state.last_outcome is Outcome.CLOSED else None,
    )
