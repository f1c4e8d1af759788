"""What can go wrong asking Tradovate, one class a kind. `outcome` is the metric and log label;
no message carries a password, `sec` or token."""

from __future__ import annotations

from typing import Any, ClassVar

from daemon.outcomes import Outcome


class TradovateError(Exception):
    """A refresh that did not produce a token. `outcome` is the metric and log label."""

    outcome: ClassVar[Outcome] = Outcome.UNAVAILABLE


class TradovateUnavailable(TradovateError):
    """Timeouts, connection faults, HTTP 5xx and other statuses: transient."""


class InvalidResponse(TradovateError):
    """A body that is not JSON, or lacks a well-formed token: transient, and never written."""

    outcome = Outcome.INVALID_RESPONSE


class CredentialsRejected(TradovateError):
    """`errorText` on login: a wrong password or app identity. Not transient."""

    outcome = Outcome.REJECTED


class TokenRefused(TradovateError):
    """The token was refused (renewal or a Bearer call): log in again."""

    outcome = Outcome.REFUSED


class RateLimited(TradovateError):
    """HTTP 429: every auth request of this address waits an hour."""

    outcome = Outcome.RATE_LIMITED


class PenaltyTicket(TradovateError):
    """Wait `wait_s`, then resend the identical login body plus this ticket."""

    outcome = Outcome.PENALTY

    def __init__(self, ticket: str, wait_s: float) -> None:
        super().__init__(f"penalty ticket: retry with it after {wait_s:g} s")
        self.ticket = ticket
        self.wait_s = wait_s


class CaptchaRequired(TradovateError):
    """`p-captcha`: no program can answer. The login is parked."""

    outcome = Outcome.CAPTCHA


def penalty_wait(data: dict[str, Any]) -> float:
    """`p-time` in seconds, bounded: garbage reads as 0, a day at the most."""
    wait_s = data.get("p-time", 0)
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not wait_s >= 0:
        return 0.0
    return float(min(wait_s, 86_400))
