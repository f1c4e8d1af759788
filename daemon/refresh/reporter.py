"""What a refresh tells the world: log lines (their level by what a person must do), metrics,
alerts (one when a login starts failing, one when it recovers) and each new token's history
record. It reports: it decides nothing, changes no login's progress and writes nothing to Redis
(the refresher's settle step has the keeper write first)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import structlog

from daemon.logs import fingerprint
from daemon.metrics import Metrics
from daemon.outcomes import Outcome
from daemon.refresh.progress import Attempt, LoginProgress
from daemon.sinks.alerts import Alerter
from daemon.sinks.audit import AuditRecorder
from daemon.token_format import iso
from daemon.tradovate import TokenGrant

log = structlog.get_logger("daemon.refresh")


class Reporter:
    def __init__(
        self,
        metrics: Metrics,
        *,
        instance: str,
        clock: Callable[[], float],
        alerts: Alerter | None = None,
        audit: AuditRecorder | None = None,
    ) -> None:
        self.metrics = metrics
        self.alerts = alerts
        self.audit = audit
        self._instance = instance
        self._clock = clock
        self._alerted: set[str] = set()  # a "failing" alert went out; the recovery gets one too
        self._budget_warned_for: dict[str, str] = {}  # the token `budget.short` was said for
        self._password_said: dict[str, tuple[float | None, str | None]] = {}

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
            next_attempt = (
                "only after an operator acts"
                if delay_s == float("inf")
                else (f"in {delay_s:.0f} s")
            )
            self.alerts.send(
                f"⚠️ {state.name}: token refresh failing ({outcome}: {error}); "
                f"next attempt {next_attempt}; current token valid for "
                f"{'no' if valid_for is None else valid_for} s" + _ALERT_HINTS.get(outcome, "")
            )
        log.log(
            logging.ERROR if outcome.needs_a_human else logging.WARNING,
            "token.refresh_failed",
            login=state.name,
            outcome=outcome,
            error=str(error),
            attempt=state.failures,
            next_attempt_in=None if delay_s == float("inf") else round(delay_s, 1),
            token_valid_for=valid_for,
        )

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
            hint="renewals this /24 may spend run out: add an instance on another /24 subnet",
        )
        if self.alerts is not None:
            self.alerts.send(
                f"⏳ {state.name}: the budget group's renewals are spent; its token expires at "
                f"{iso(grant.expires_at)}, before a renewal slot frees. It logs in again only "
                "when the budget has room (when_budget_short = wait). Add an instance on "
                "another /24 subnet."
            )

    def waiting(self, event: str, login: str, wait_s: float) -> None:
        """Waiting is no failure: auth pacing (debug), a login slot or a relogin (info)."""
        if event == "auth.deferred":
            log.debug(event, login=login, wait_s=round(wait_s, 1))
        else:
            log.info(event, login=login, wait_s=round(wait_s))

    def accounts_denied(
        self, state: LoginProgress, error: Exception, why: Outcome, pause_s: float
    ) -> None:
        """A live token that may not list its accounts: the token is kept and renewed; said
        as an error (a person must fix the API key's scope or the device id), alerted once."""
        self.metrics.refresh_total.labels(login=state.name, outcome=why).inc()
        log.error(
            "accounts.denied",
            login=state.name,
            outcome=why,
            error=str(error),
            accounts_asked_again_in=round(pause_s),
            hint="the token is kept and renewed; check the API key's scope (accounts) and "
            "that the device id has not changed",
        )
        if self.alerts is not None and state.accounts_denials == 1:
            self.alerts.send(
                f"⚠️ {state.name}: Tradovate refuses the account list of a live token "
                f"({why}: {error}): API key scope or device id. The token is kept; its accounts' "
                "keys are not refreshed until the list is allowed."
            )

    def accounts_allowed(self, login: str) -> None:
        log.info("accounts.allowed", login=login)

    def renewal_captcha(self, login: str, park_s: float, group: str) -> None:
        log.error(
            "budget.renew_captcha",
            login=login,
            park_s=park_s,
            group=group,
            hint="Tradovate asks for a captcha on renewals: the group renews nothing for the "
            "park; logins follow when_budget_short",
        )
        if self.alerts is not None:
            self.alerts.send(
                f"⛔ {login}: Tradovate answered a renewal with a captcha; budget group {group} "
                f"renews nothing for {park_s:.0f} s. A person may need to log in on Tradovate."
            )

    def password_news(
        self,
        login: str,
        grant: TokenGrant,
        added_notes: Iterable[str],
        news: tuple[float | None, str | None],
        note: str,
    ) -> None:
        """A password expiring within a week, or a `hibpHint` (`news`, said as `note`): said
        once per change, alerted, and the expiry exported; an unconfirmed user said when its
        note was added."""
        if any(added.startswith(str(Outcome.UNCONFIRMED)) for added in added_notes):
            log.warning("login.unconfirmed", login=login, user_status=grant.user_status)
        if grant.password_expires_at is not None:
            self.metrics.password_expiry.labels(login=login).set(grant.password_expires_at)
        if news == (None, None):
            self._password_said.pop(login, None)
            return
        if self._password_said.get(login) == news:
            return
        self._password_said[login] = news
        expires_at, hint = news
        log.warning(
            "login.password_expiring",
            login=login,
            password_expires_at=iso(expires_at),
            hibp_hint=hint,
            hint="change the password at Tradovate and in the daemon's configuration",
        )
        if self.alerts is not None:
            self.alerts.send(f"🔑 {login}: {note}. Change it at Tradovate and here.")

    def names_refused(self, login: str, names: Iterable[str]) -> None:
        """Account names no key may carry, each said when its note is added."""
        for name in names:
            log.warning("account.name_refused", login=login, name=name[:64])

    def penalty(self, login: str, wait_s: float, endpoint: str | None = None) -> None:
        log.warning("tradovate.penalty", login=login, wait_s=wait_s, **_endpoint(endpoint))

    def not_written(self, login: str, reason: str) -> None:
        log.warning("token.not_written", login=login, reason=reason)


_ALERT_HINTS = {
    Outcome.CAPTCHA: " — parked: a person must log in on Tradovate",
    Outcome.LOCKED: " — Tradovate locked the user for a while; no login is tried for an hour",
    Outcome.CLOSED: " — the user is closed at Tradovate; `orca-tokens tokens refresh NAME` "
    "after fixing it",
    Outcome.UNCONFIRMED: " — the user must finish signing up (confirm the e-mail) at Tradovate",
    Outcome.LOCKOUT: " — HTTP 423: no login of the budget group is sent for an hour",
    Outcome.RATE_LIMITED: " — HTTP 429: this user waits an hour",
    Outcome.BAD_REQUEST: " — HTTP 400: a person must check what is sent (settings, version)",
    Outcome.NOT_FOUND: " — HTTP 404: check TRADOVATE_BASE_URL / TRADOVATE_TV_BASE_URL",
}


def _endpoint(endpoint: str | None) -> dict[str, str]:
    return {} if endpoint is None else {"endpoint": endpoint}
