"""Keeping Redis in step with what the refresher holds: writing a login's keys and status (fenced
by its lease), deleting a dead token's keys, and restoring keys that went missing. It decides
nothing (what to write and when is the refresher's); Tradovate is never asked here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import redis
import structlog

from daemon.outcomes import LoginState, Outcome
from daemon.refresh.names import AccountNames
from daemon.refresh.progress import LoginProgress, login_status
from daemon.store.fence import LeaseLost, fenced_delete
from daemon.store.lease import Fence
from daemon.store.status import LoginStatus, write_status
from daemon.store.tokens import (
    InvalidTokenError,
    TokenSet,
    fingerprint,
    md_token_key,
    read_token_keys,
    token_key,
    write_login_tokens,
)
from daemon.token_format import iso, token_problem

log = structlog.get_logger("daemon.refresh")

FOREIGN_WRITER_REPEAT_S = 3_600.0  # `token.foreign_writer` once per login and hour


class RedisKeeper:
    def __init__(
        self,
        redis_client: redis.Redis,
        states: Mapping[str, LoginProgress],
        names: AccountNames,
        *,
        window_s: float,
        max_ttl_s: int,
        instance: str,
        clock: Callable[[], float],
        may_act: Callable[[str], bool],
        fence: Callable[[str], Fence | None],
    ) -> None:
        """`window_s`: the budget window, the time-scale of a key's margin."""
        self.redis = redis_client
        self._states = states
        self._names = names
        self._window_s = window_s
        self._max_ttl_s = max_ttl_s
        self._instance = instance
        self._clock = clock
        self._may_act = may_act
        self._fence = fence
        self._foreign_said_at: dict[str, float] = {}

    def write(
        self,
        state: LoginProgress,
        *,
        success: Outcome | None = None,
        next_attempt_at: float | None = None,
    ) -> int:
        """Write the login's held token under every name, with its status, in one round trip.
        With `success`, the status written is that of the success (so `last_success_at` lands
        with the token it describes), next due at `next_attempt_at`. Returns the TTL."""
        grant = state.grant
        assert grant is not None
        tokens = TokenSet(
            login=state.name,
            access_token=grant.access_token,
            expires_at=grant.expires_at,
            lifetime_s=grant.lifetime_s,
            md_access_token=grant.md_access_token,
            accounts=self._names.owned(state)[1:],
            md_expires_at=grant.md_expires_at,
            window_s=self._window_s,
        )
        now = self._clock()
        status = self.status(state, now)
        if success is not None:
            status = replace(
                status,
                state=LoginState.OK,
                failures=0,
                last_outcome=success,
                last_error=None,
                last_success_at=iso(now),
                next_attempt_at=None if next_attempt_at is None else iso(next_attempt_at),
            )
        ttl = write_login_tokens(
            self.redis,
            tokens,
            now=now,
            max_ttl_s=self._max_ttl_s,
            status=status,
            fence=self._fence(state.name),
        )
        self._drop_left_names(state, tokens.names)
        state.written_names, state.written_token = tokens.names, grant.access_token
        return ttl

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
        return login_status(state, now, self._names.owned(state)[1:], self._instance)

    def drop_dead_token(self, state: LoginProgress, reason: str) -> None:
        """Tradovate refused the held token (its session was closed, or it was renewed away):
        no reader may get it from Redis a moment longer. The keys that still hold it go now,
        fenced like any write; the next attempt logs in again, within the pacing and budgets."""
        assert state.grant is not None
        dead, state.grant = state.grant.access_token, None
        names = self._names.owned(state)
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
        """One pipelined pass: every login whose token key is missing or holds another token
        than the one held here gets its keys rewritten (Redis restarted empty, a FLUSHALL, an
        operator's DEL). Returns the logins restored."""
        now = self._clock()
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
        names = [self._names.owned(state) for state in held]
        found = iter(read_token_keys(self.redis, [n for g in names for n in g], with_ttl=False))
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
            hint="another program writes token keys: switch it off (README, Coming from the "
            "seed's scripts)",
        )
