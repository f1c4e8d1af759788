"""Tokens the simulator mints: HS256 JWTs with a real `exp` (or opaque random strings, since
Tradovate promises no format), each naming its user, session and purpose."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
from collections.abc import Callable
from typing import Any


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


class TokenMint:
    def __init__(self, clock: Callable[[], float], *, opaque: bool = False) -> None:
        self.clock = clock
        self.opaque = opaque
        self._opaque: dict[str, dict[str, Any]] = {}
        self._key = secrets.token_bytes(32)
        self._token_ids = itertools.count(1)

    def issue(self, user: str, session: int, purpose: str, lifetime_s: float) -> tuple[str, float]:
        now = self.clock()
        expires_at = now + lifetime_s
        claims = {
            "sub": user,
            "sid": session,
            "jti": next(self._token_ids),
            "use": purpose,
            "iat": int(now),
            "exp": int(expires_at),
        }
        if self.opaque:
            token = secrets.token_urlsafe(48)
            self._opaque[token] = claims
            return token, float(int(expires_at))
        header = b64({"alg": "HS256", "typ": "JWT"})
        payload = b64(claims)
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        token = f"{header}.{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
        return token, float(int(expires_at))

    def verify(self, token: str) -> dict[str, Any] | None:
        """The claims of a live token this mint issued, or None."""
        if self.opaque:
            found = self._opaque.get(token)
            return found if found is not None and found["exp"] > self.clock() else None
        try:
            header, payload, signature = token.split(".")
            expected = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            if not hmac.compare_digest(expected, given):
                return None
            claims: dict[str, Any] = json.loads(
                base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            )
        except ValueError:
            return None
        return claims if claims.get("exp", 0) > self.clock() else None
