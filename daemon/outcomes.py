"""The words the daemon speaks about a login, as enums: what an attempt did (metric label, log
field, `orca:status` value) and the state a login is in. They are StrEnums, so JSON, metrics and
logs carry the plain word."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    # A token in hand.
    LOGIN = "login"  # accesstokenrequest: a new Tradovate session
    RENEW = "renew"  # renewaccesstoken: a fresh token in the same session
    KEPT = "kept"  # accounts refreshed, the token still good
    ADOPTED = "adopted"  # found in Redis after a restart or a takeover (a token's source only)
    # Not yet: nothing went wrong.
    DEFERRED = "deferred"  # waiting for an auth slot
    PENALTY = "penalty"  # waiting out a penalty ticket
    PARKED = "parked"  # waiting out a captcha park
    NOT_OWNER = "not_leader"  # this instance may not act now (lease not certainly held, stopping)
    # Failures.
    UNAVAILABLE = "unavailable"  # timeouts, resets, 5xx
    INVALID_RESPONSE = "invalid_response"  # HTML, not JSON, no or bad token
    REJECTED = "rejected"  # a wrong password or app identity
    REFUSED = "refused"  # the token was refused
    RATE_LIMITED = "rate_limited"  # HTTP 429
    CAPTCHA = "captcha"  # p-captcha: a person must log in
    REDIS = "redis"  # the token is fine; Redis did not take it
    INVALID_TOKEN = "invalid_token"  # a token that must not be written
    LOCKED = "locked"  # userStatus TemporaryLocked: parked an hour, no failed login more
    CLOSED = "closed"  # userStatus Closed: parked until an operator acts
    UNCONFIRMED = "unconfirmed"  # userStatus UnconfirmedEmail or Initiated: a person must act
    LOCKOUT = "lockout"  # HTTP 423: the group sends no login for an hour
    ACCOUNTS_DENIED = "accounts_denied"  # /account/list refuses a live token: key scope, device id
    BAD_REQUEST = "bad_request"  # HTTP 400: a person must look at what is sent
    NOT_FOUND = "not_found"  # HTTP 404: a wrong base URL or route
    PASSWORD_EXPIRING = "password_expiring"  # a warning word only (status notes, alerts)

    @property
    def ok(self) -> bool:
        return self in _SUCCESSES

    @property
    def deferred(self) -> bool:
        """Not a failure: an auth slot or a penalty ticket's wait is due later."""
        return self in (Outcome.DEFERRED, Outcome.PENALTY)

    @property
    def counted(self) -> bool:
        """An attempt that did something, for orca_token_refresh_total: waiting (pacing, a
        penalty, a park) and not being allowed to act (not the owner) are not attempts."""
        return self not in (Outcome.DEFERRED, Outcome.PENALTY, Outcome.PARKED, Outcome.NOT_OWNER)

    @property
    def needs_a_human(self) -> bool:
        """Retrying alone will not fix it: logged as an error."""
        return self in _NEEDS_A_HUMAN

    @property
    def held_back(self) -> bool:
        """A failure whose back-off the rejected-password ladder sets (15 min to 4 h, kept
        across restarts): an operator's `tokens refresh NAME` may try it once at once."""
        return self in _HELD_BACK


_NEEDS_A_HUMAN = frozenset(
    {
        Outcome.REJECTED,
        Outcome.CAPTCHA,
        Outcome.RATE_LIMITED,
        Outcome.LOCKED,
        Outcome.CLOSED,
        Outcome.UNCONFIRMED,
        Outcome.LOCKOUT,
        Outcome.ACCOUNTS_DENIED,
        Outcome.BAD_REQUEST,
        Outcome.NOT_FOUND,
    }
)
_HELD_BACK = frozenset(
    {Outcome.REJECTED, Outcome.CLOSED, Outcome.UNCONFIRMED, Outcome.BAD_REQUEST, Outcome.NOT_FOUND}
)


_SUCCESSES = frozenset({Outcome.LOGIN, Outcome.RENEW, Outcome.KEPT})


class LoginState(StrEnum):
    OK = "ok"  # a valid token held
    FAILING = "failing"  # the last attempt failed; retrying
    PARKED = "parked"  # waiting out a captcha
    PENDING = "pending"  # no token yet, nothing failed


class TokenState(StrEnum):
    """What a token key holds, as a reader sees it (`check`, `tokens list`, `/readyz`, `health`)."""

    VALID = "valid"
    EXPIRING = "expiring"  # valid, but closer to its expiry than the renewal lead (15 min)
    MISSING = "missing"
    INVALID = "invalid"  # not a token, expired, or of no known expiry
    UNKNOWN = "unknown"  # Redis did not answer

    @property
    def usable(self) -> bool:
        return self in (TokenState.VALID, TokenState.EXPIRING)
