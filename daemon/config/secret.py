"""A value that must never be shown, and the password a DSN or URL may carry."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import urlsplit


class Secret:
    """A value that must never be shown: its repr and str are masks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)

    def digest(self, salt: str) -> str:
        """A slow, salted digest (PBKDF2, 200,000 rounds), to tell whether a value changed
        without keeping anything a guess could be checked against cheaply."""
        derived = hashlib.pbkdf2_hmac("sha256", self._value.encode(), salt.encode(), 200_000)
        return derived[:8].hex()


def embedded_password(dsn: str) -> str:
    """The password inside a URL (scheme://user:pw@host) or a libpq string (password=pw)."""
    if "://" in dsn:
        return urlsplit(dsn).password or ""
    found = re.search(r"(?:^|\s)password\s*=\s*'?([^'\s]+)", dsn)
    return found.group(1) if found else ""
