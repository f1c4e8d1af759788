"""What a refresh tells the world: log lines (their level by what a person must do), metrics,
alerts (one when a login starts failing, one when it recovers), the status of a failure, and
each new token's history record. It reports; it decides nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import structlog

from daemon.metrics import Metrics
from daemon.outcomes import Outcome
from daemon.refresh.keeper import RedisKeeper
from daemon.refresh.policy import Attempt
from daemon.refresh.progress import LoginProgress
from daemon.sinks.alerts import Alerter
from daemon.sinks.audit import AuditRecorder
from daemon.store.tokens import fingerprint
from daemon.token_format import iso

log = structlog.get_logger("daemon.refresh")


class Reporter:
    def __init__(
        self,
        metrics: Metrics,
        keeper: RedisKeeper,
        *,
        instance: str,
        clock: Callable[[], float],
        alerts: Alerter | None = None,
        audit: AuditRecorder | None = None,
    ) -> None:
        self.metrics = metrics
        self.alerts = alerts
        self.audit = audit
        self._keeper = keeper
        self._instance = instance
        self._clock = clock
        self._alerted: set[str] = set()  # a "failing" alert went out; the recovery gets one too
        self._budget_warned_for: dict[str, str] = {}  # the token `budget.short` was said for

    def attempted(self, name: str, attempt: Attempt, seconds: float) -> None:
        if attempt.outcome.counted:
            self.metrics.refresh_duration.observe(seconds)
            self.metrics.refresh_total.labels(login=name, outcome=attempt.outcome).inc()

    def forget(self, name: str) -> None:
        self._alerted.discard(name)

    def new_token(self, state: LoginProgress, names: Iterable[str]) -> None:
        grant = state.grant
        if self.audit is None or grant is None:
            return
        self.audit.record(
            state.name,
            names,
            grant.access_token,
            issued_at=grant.issued_at,
            expires_at=grant.expires_at,
            source=grant.source,
            instance=self._instance,
        )

    def succeeded(
        self, state: LoginProgress, source: Outcome, after_failures: int, delay_s: float
    ) -> None:
        grant = state.grant
        assert grant is not None
        now = self._clock()
        if after_failures:
            log.info("token.recovered", login=state.name, after_attempts=after_failures)
        if state.name in self._alerted and self.alerts is not None:
            self.alerts.send(
                f"✅ {state.name}: token refreshed again after {after_failures} attempts"
            )
        self._alerted.discard(state.name)
        self.metrics.last_success.labels(login=state.name).set(now)
        self.metrics.token_expiry.labels(login=state.name).set(grant.expires_at)
        log.info(
            "token.refreshed",
            login=state.name,
            outcome=source,
            fingerprint=fingerprint(grant.access_token),
            expires_at=iso(grant.expires_at),
            ttl=int(grant.expires_at - now),
            accounts=len(state.accounts),
            next_attempt_in=round(delay_s, 1),
        )

    def failed(
        self, state: LoginProgress, error: Exception, outcome: Outcome, delay_s: float
    ) -> None:
        if outcome is Outcome.REDIS:
            # The login is fine and its token is held: Redis's state is logged (once per change)
            # and restored by the reconcile pass; the attempt itself is detail.
            log.debug(
                "token.write_failed", login=state.name, error=str(error), attempt=state.failures
            )
            return
        grant = state.grant
        valid_for = int(grant.expires_at - self._clock()) if grant is not None else None
        if state.name not in self._alerted and self.alerts is not None:
            self._alerted.add(state.name)
            self.alerts.send(
                f"⚠️ {state.name}: token refresh failing ({outcome}: {error}); "
                f"next attempt in {delay_s:.0f} s; current token valid for "
                f"{'no' if valid_for is None else valid_for} s"
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
            next_attempt_in=round(delay_s, 1),
            token_valid_for=valid_for,
        )
        self._keeper.write_status(state)  # tells operators and `status` a login is failing

    def budget_short(self, state: LoginProgress, now: float, wait_s: float, group: str) -> None:
        """The renewal budget is spent. If no slot frees before the token dies, say so once
        per token: it will lapse, and the login logs in again after it (`wait`)."""
        grant = state.grant
        assert grant is not None
        said = self._budget_warned_for.get(state.name) == grant.access_token
        if now + wait_s < grant.expires_at or said:
            return
        self._budget_warned_for[state.name] = grant.access_token
        log.warning(
            "budget.short",
            login=state.name,
            expires_at=iso(grant.expires_at),
            slot_in_s=round(wait_s),
            group=group,
            hint="renewals this address may spend run out: add an instance on another address",
        )
        if self.alerts is not None:
            self.alerts.send(
                f"⏳ {state.name}: the address's renewal budget is spent; its token expires at "
                f"{iso(grant.expires_at)}, before a renewal slot frees. It will log in again "
                "after it lapses (when_budget_short = wait). Add an instance on another address."
            )

    def waiting(self, event: str, login: str, wait_s: float) -> None:
        """Waiting is no failure: auth pacing (debug), a login slot or a relogin (info)."""
        if event == "auth.deferred":
            log.debug(event, login=login, wait_s=round(wait_s, 1))
        else:
            log.info(event, login=login, wait_s=round(wait_s))

    def penalty(self, login: str, wait_s: float, endpoint: str | None = None) -> None:
        log.warning("tradovate.penalty", login=login, wait_s=wait_s, **_endpoint(endpoint))

    def not_written(self, login: str, reason: str) -> None:
        log.warning("token.not_written", login=login, reason=reason)


def _endpoint(endpoint: str | None) -> dict[str, str]:
    return {} if endpoint is None else {"endpoint": endpoint}
