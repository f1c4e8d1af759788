"""What a token and its expiry look like on the wire: decoding a JWT's claims and reading
Tradovate's `expirationTime`. Pure functions, used by the Tradovate client and the token store."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Any

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a well-formed JWT (three base64url parts, JSON payload), else None."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_BASE64URL.match(part) for part in parts):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def token_expiry(token: object) -> float | None:
    """The `exp` of a well-formed JWT, or None for anything else."""
    if not isinstance(token, str) or not token:
        return None
    claims = jwt_claims(token)
    exp = claims.get("exp") if claims else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def parse_expiration_time(value: object) -> float | None:
    """expirationTime: ISO 8601 ("2026-11-25T20:00:00.000Z") or epoch milliseconds."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value / 1000 if value > 1e11 else float(value)
    return None
