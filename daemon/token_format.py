"""What a token and its expiry look like on the wire. Pure functions, used by the Tradovate
client and the token store.

Tradovate promises only that `accessToken` is a string: it may be a JWT or opaque. So a token's
life comes from `expirationTime`; a JWT's `exp`, when there is one, is a cross-check and the
earlier of the two wins. A token is refused only when it could not be one: empty, with
whitespace, control or non-ASCII characters (a Bearer header could not carry it), or absurdly
long.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from daemon.timescale import TimeScale

MAX_TOKEN_CHARS = 8_192
# Timestamps outside these are not expiries but garbage (or an attack on the parser).
EARLIEST_TIMESTAMP_S = 946_684_800.0  # 2000-01-01
LATEST_TIMESTAMP_S = 7_258_118_400.0  # 2200-01-01
EPOCH_MILLISECONDS_ABOVE = 1e11  # larger epoch numbers are milliseconds

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_UNFIT = re.compile(r"[^\x21-\x7e]")  # a Bearer header carries visible ASCII only
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def token_problem(token: object) -> str | None:
    """Why `token` cannot be a token (never quoting it), or None when it may be one."""
    if not isinstance(token, str) or not token:
        return "empty"
    if len(token) > MAX_TOKEN_CHARS:
        return f"longer than {MAX_TOKEN_CHARS} characters"
    if _UNFIT.search(token):
        return "contains whitespace, control or non-ASCII characters"
    return None


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a well-formed JWT (three base64url parts, JSON payload), else None."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_BASE64URL.match(part) for part in parts):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None
    return payload if isinstance(payload, dict) else None


def bounded_timestamp(value: object) -> float | None:
    """A number of epoch seconds within sane bounds, else None (NaN, infinities, huge)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    if not math.isfinite(seconds) or not EARLIEST_TIMESTAMP_S <= seconds <= LATEST_TIMESTAMP_S:
        return None
    return seconds


def jwt_expiry(token: object) -> float | None:
    """The `exp` of a well-formed JWT, or None for anything else (an opaque token included)."""
    if not isinstance(token, str) or token_problem(token) is not None:
        return None
    claims = jwt_claims(token)
    return bounded_timestamp(claims.get("exp")) if claims else None


def iso(timestamp: float | None) -> str | None:
    """A timestamp as the ISO text `orca:status` and the logs carry (UTC, seconds)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def parse_expiration_time(value: object) -> float | None:
    """Tradovate's `expirationTime` (and the times the daemon records in a status): ISO 8601
    with or without a fraction and an offset (naive means UTC), or epoch seconds or
    milliseconds. None when absent or out of bounds."""
    if isinstance(value, str):
        text = _LONG_FRACTION.sub(r"\1", value.strip())  # .NET writes 7 fraction digits
        try:
            parsed = datetime.fromisoformat(text)
            seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            return None
        return bounded_timestamp(seconds)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value > EPOCH_MILLISECONDS_ABOVE:
        try:
            value = value / 1000
        except OverflowError:
            return None
    return bounded_timestamp(value)


def token_expiry(token: object, expiration_time: object = None) -> float | None:
    """When a token dies: the earlier of `expirationTime` and a JWT `exp`, whichever are
    present; None when neither says."""
    found = [
        t for t in (parse_expiration_time(expiration_time), jwt_expiry(token)) if t is not None
    ]
    return min(found) if found else None


def tradovate_minutes(seconds: float, window_s: float) -> str:
    """Seconds on the budget window's time-scale (ORCA_BUDGET_WINDOW), in Tradovate's minutes."""
    return f"{TimeScale(window_s).on_tradovate(seconds) / 60:.1f} min"
