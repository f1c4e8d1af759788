"""Desks of simulated users: the reference's four APEX logins, or a numbered one of any size."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

REFERENCE_DESK = {"APEX_266668": 4, "APEX_272045": 5, "APEX_136189": 3, "APEX_265995": 1}


@dataclass
class FakeUser:
    name: str
    password: str
    accounts: list[str]
    user_id: int = 0
    # userStatus: Active, Closed, Initiated, TemporaryLocked, UnconfirmedEmail (SPEC's schema)
    status: str = "Active"
    password_expires_at: float | None = None  # passwordExpirationTime, epoch seconds
    hibp_hint: str | None = None  # e.g. EmailAndPasswordCompromised
    accounts_denied: bool = False  # /account/list answers 401 to its live tokens (key scope)
    account_flags: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> overrides


def reference_desk(password_prefix: str = "demo-") -> list[FakeUser]:
    """The reference's four APEX logins and their 13 accounts (PAAPEX2666680000001, ...)."""
    return [
        FakeUser(
            name=login,
            password=f"{password_prefix}{login}",
            accounts=[f"PA{login.replace('_', '')}{n:07d}" for n in range(1, count + 1)],
        )
        for login, count in REFERENCE_DESK.items()
    ]


def numbered_desk(logins: int, accounts: int) -> list[FakeUser]:
    """LOGIN_0000.. with `accounts` accounts each, password pw-<n>: for benchmarks and trials."""
    return [
        FakeUser(f"LOGIN_{n:04d}", f"pw-{n}", [f"PA{n:04d}{a:02d}" for a in range(accounts)])
        for n in range(logins)
    ]
