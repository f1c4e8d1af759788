"""Adopting what Redis already holds when this instance takes a login (a restart, a previous
owner): its token, so that the first refresh renews it instead of opening a new Tradovate
session, and a back-off or park its status records, so that a crash loop retries nothing
sooner. One read of Redis, then the policy decides (the leads say when a token adopted renews)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import redis
import structlog

from daemon.outcomes import Outcome
from daemon.refresh.policy import Policy
from daemon.refresh.progress import LoginProgress
from daemon.refresh.schedule import Leads
from daemon.store.client import get_many
from daemon.store.foreign import report_foreign
from daemon.store.status import read_statuses
from daemon.store.tokens import fingerprint, md_token_key, read_token_keys, token_key
from daemon.token_format import iso, jwt_expiry, token_problem
from daemon.tradovate import TokenGrant

log = structlog.get_logger("daemon.refresh")


class Adoption:
    def __init__(
        self,
        redis_client: redis.Redis,
        states: Mapping[str, LoginProgress],
        policy: Policy,
        leads: Leads,
        *,
        clock: Callable[[], float],
        longest_park_s: float,
    ) -> None:
        """`longest_park_s`: no park restored from a status (anyone's to write) outlasts it."""
        self.redis = redis_client
        self._states = states
        self._policy = policy
        self._leads = leads
        self._clock = clock
        self._longest_park_s = longest_park_s

    def adopt(self, names: list[str] | None = None) -> int:
        """Take over tokens already in Redis (a restart, a previous owner) so that the first
        refresh renews them instead of opening new Tradovate sessions. Returns how many."""
        now = self._clock()
        names = list(self._states) if names is None else names
        keys = read_token_keys(self.redis, names, with_ttl=False)
        md_tokens = get_many(self.redis, [md_token_key(name) for name in names])
        statuses = read_statuses(self.redis, names)
        adopted, restore = 0, self._policy.restore_backoff
        for key, md_token, recorded in zip(keys, md_tokens, statuses, strict=True):
            state, token = self._states[key.name], key.token
            if recorded is not None and restore(state, recorded, now, self._longest_park_s):
                log.info(
                    "login.backoff_restored",
                    login=state.name,
                    outcome=state.last_outcome,
                    until=recorded.parked_until or recorded.next_attempt_at,
                )
            if state.grant is not None or token is None:
                continue
            # Only the expiry recorded with this very token counts: nothing is decoded.
            expiry = None if recorded is None else recorded.expiry_of(token)
            if expiry is None:  # the next login replaces it: named first, like any foreign value
                problem = token_problem(token)
                what = f"not a token ({problem})" if problem else "a token no login status records"
                report_foreign(token_key(state.name), f"{what}: replaced by a new login", token)
                continue
            if expiry <= now or recorded is None:
                continue
            issued_at = recorded.issued_at_s()
            usable_md = md_token if token_problem(md_token) is None else None
            state.grant = TokenGrant(
                access_token=token,
                expires_at=expiry,
                issued_at=issued_at if issued_at is not None else now,
                source=Outcome.ADOPTED,
                md_access_token=usable_md,
                md_expires_at=None if usable_md is None else jwt_expiry(usable_md) or expiry,
            )
            # Renewed when due, as if this instance had issued it (a restart or a takeover must
            # not spend renewals in a burst); with no record of its issue, renewed at once. The
            # first attempt lists the accounts, which confirms the token is still alive.
            advised = self._leads.renew_at(state.grant) if issued_at is not None else now
            state.advised_renew_at = advised
            state.accounts = recorded.accounts
            adopted += 1
            log.info(
                "token.adopted",
                login=state.name,
                fingerprint=fingerprint(token),
                expires_at=iso(expiry),
                accounts=len(state.accounts),
            )
        return adopted
