"""The TradingView broker route (SPEC, "Two ways to log in"): a login with only a name and a
password, `POST {TRADOVATE_TV_BASE_URL}/authorize?locale=en`, form-encoded, no API key. Only the
login differs: its token is a Tradovate access token, renewed and used like an `api` one.

Answers come as HTTP 200 either way: `{"s":"ok","d":{"access_token":..., "expiration":...}}` or
`{"s":"error","errmsg":...}`; a penalty body (`p-ticket`, `p-time`, `p-captcha`) has no `s`.
"""

from __future__ import annotations

from typing import Any, Final

from daemon.config import Login
from daemon.logs import scrub
from daemon.token_format import bounded_timestamp, jwt_expiry, token_problem
from daemon.tradovate.errors import (
    CaptchaRequired,
    CredentialsRejected,
    InvalidResponse,
    PenaltyTicket,
    penalty_wait,
)

AUTHORIZE_ENDPOINT: Final = "/authorize"
AUTHORIZE_QUERY: Final = {"locale": "en"}
ERRMSG_MAX_CHARS: Final = 200
RATE_LIMIT_WAIT_S: Final = 15.0  # an errmsg about too many requests waits like a penalty ticket
_RATE_LIMIT_WORDS: Final = ("rate limit", "too many")


class NotEntitled(CredentialsRejected):
    """The login may not use the TradingView route (its add-on is off, or its account failed or
    is inactive): it backs off like a rejected password."""


def authorize_form(login: Login, p_ticket: str | None = None) -> dict[str, str]:
    if login.password is None:
        raise ValueError(f"login {login.name}: settings were read without credentials")
    form = {"locale": "en", "login": login.name, "password": login.password.reveal()}
    if p_ticket:
        form["p-ticket"] = p_ticket
    return form


def authorized(data: Any, now: float) -> tuple[str, float | None]:
    """The access token and its first expiry from an /authorize answer, or the error it means.
    The expiry is the earlier of `d.expiration` and the token's JWT `exp`, whichever are there;
    None with neither (the first renewal says it)."""
    if not isinstance(data, dict):
        raise InvalidResponse(f"{AUTHORIZE_ENDPOINT}: answer is not a JSON object")
    if data.get("p-captcha"):
        raise CaptchaRequired(f"{AUTHORIZE_ENDPOINT}: Tradovate asks for a captcha")
    if data.get("p-ticket"):
        raise PenaltyTicket(str(data["p-ticket"]), penalty_wait(data))
    if data.get("s") == "error":
        errmsg = scrub(str(data.get("errmsg")))[:ERRMSG_MAX_CHARS]
        said = f"{AUTHORIZE_ENDPOINT}: {errmsg}"
        if any(words in errmsg.lower() for words in _RATE_LIMIT_WORDS):
            raise PenaltyTicket("", RATE_LIMIT_WAIT_S)
        if "entitled" in errmsg.lower():
            raise NotEntitled(
                f"{said} (the login needs Tradovate's TradingView add-on and an active account)"
            )
        raise CredentialsRejected(said)
    if data.get("s") != "ok" or not isinstance(data.get("d"), dict):
        raise InvalidResponse(f'{AUTHORIZE_ENDPOINT}: answer has no "s": "ok" and no "d"')
    token = data["d"].get("access_token")
    problem = token_problem(token)
    if problem is not None or not isinstance(token, str):
        raise InvalidResponse(f"{AUTHORIZE_ENDPOINT}: unusable access_token ({problem})")
    known = [
        expiry
        for expiry in (bounded_timestamp(data["d"].get("expiration")), jwt_expiry(token))
        if expiry is not None
    ]
    if not known:
        if data["d"].get("expiration") is not None:  # there, but absurd: not a lifetime
            raise InvalidResponse(f"{AUTHORIZE_ENDPOINT}: an expiration that is no time")
        return token, None
    expires_at = min(known)
    if expires_at <= now:
        raise InvalidResponse(f"{AUTHORIZE_ENDPOINT}: the token has already expired")
    return token, expires_at
