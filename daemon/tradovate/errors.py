"""What can go wrong asking Tradovate, one class a kind. `outcome` is the metric and log label;
no message carries a password, `sec` or token."""

from __future__ import annotations

from typing import Any, ClassVar, Final

from daemon.logs import scrub
from daemon.outcomes import Outcome


class TradovateError(Exception):
    """A refresh that did not produce a token. `outcome` is the metric and log label."""

    outcome: ClassVar[Outcome] = Outcome.UNAVAILABLE


class TradovateUnavailable(TradovateError):
    """Timeouts, connection faults, HTTP 5xx and other statuses: transient."""


class Stopped(TradovateUnavailable):
    """A stop began: no request starts, and an answer still streaming in is dropped."""

    outcome = Outcome.NOT_OWNER


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
    """HTTP 429: Tradovate's per-user limit. That user (only) waits an hour."""

    outcome = Outcome.RATE_LIMITED


class UserLocked(TradovateError):
    """userStatus TemporaryLocked: every further failed login may prolong the lock."""

    outcome = Outcome.LOCKED


class UserClosed(TradovateError):
    """userStatus Closed: no retry helps until a person acts."""

    outcome = Outcome.CLOSED


class UserUnconfirmed(TradovateError):
    """userStatus UnconfirmedEmail or Initiated, and no token: the user must finish signing up."""

    outcome = Outcome.UNCONFIRMED


class LockoutWarning(TradovateError):
    """HTTP 423, "you are about to be locked out": no login of the group for an hour."""

    outcome = Outcome.LOCKOUT


class AccountsDenied(TradovateError):
    """401, 403 or `errorText` on /account/list: a dead session, or a live token that may not
    list accounts (the API key's scope, a changed device id). The refresher tells them apart."""

    outcome = Outcome.ACCOUNTS_DENIED


class BadRequest(TradovateError):
    """HTTP 400: what is sent is malformed; a person must look."""

    outcome = Outcome.BAD_REQUEST


class NotFound(TradovateError):
    """HTTP 404: a wrong base URL or route; a person must look."""

    outcome = Outcome.NOT_FOUND


# Tradovate documents 15 s tickets; a zero or missing `p-time` never means "at once".
ZERO_PENALTY_WAIT_S = 15.0


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
    """`p-time` in seconds, bounded: zero, missing or garbage reads as Tradovate's 15 s, a day
    at the most."""
    wait_s = data.get("p-time", 0)
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not wait_s > 0:
        return ZERO_PENALTY_WAIT_S
    return float(min(wait_s, 86_400))


# HTTP statuses with a meaning of their own (partner docs, "Error Handling"); 401 and 403 depend
# on the endpoint and are the client's to name.
STATUS_ERRORS: Final[dict[int, tuple[type[TradovateError], str]]] = {
    400: (BadRequest, "malformed request"),
    404: (NotFound, "unknown endpoint"),
    423: (LockoutWarning, "about to be locked out: no login for an hour"),
    429: (RateLimited, "the user's request limit: an hour's wait"),
}


_ERROR_TEXT_MAX_CHARS: Final = 200


def error_text(data: dict[str, Any]) -> str:
    """Tradovate's errorText, scrubbed of anything secret and cut short."""
    return scrub(str(data.get("errorText")))[:_ERROR_TEXT_MAX_CHARS]


def user_status_error(data: dict[str, Any], endpoint: str) -> TradovateError | None:
    """What a login answer's `userStatus` means when it stops the login."""
    status = data.get("userStatus")
    said = f"{endpoint}: userStatus {status}" + (
        f" ({error_text(data)})" if data.get("errorText") else ""
    )
    if status == "TemporaryLocked":
        return UserLocked(f"{said}: Tradovate locked the user for a while; no login is tried")
    if status == "Closed":
        return UserClosed(f"{said}: the user is closed at Tradovate; a person must act")
    if status in UNCONFIRMED_STATUSES and (data.get("errorText") or not data.get("accessToken")):
        return UserUnconfirmed(f"{said}: the user must finish signing up at Tradovate")
    return None


UNCONFIRMED_STATUSES: Final = ("UnconfirmedEmail", "Initiated")
