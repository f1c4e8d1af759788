"""Tables of what is in Redis, in the spirit of the reference's check_all_redis.py.
Token values are never shown: a fingerprint names each one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import redis

from daemon.constants import STATUS_KEY_PREFIX, TOKEN_KEY_PREFIX
from daemon.tokens import fingerprint, status_accounts, token_expiry, token_state

EXPIRING_SOON_S = 15 * 60


@dataclass(frozen=True)
class TokenRow:
    name: str
    login: str
    ttl_s: int | None  # None: no key
    state: str  # valid | expiring | missing | invalid
    fingerprint: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def token_rows(
    client: redis.Redis,
    logins: Sequence[str],
    *,
    now: float,
    expiring_within_s: float = EXPIRING_SOON_S,
) -> list[TokenRow]:
    """Every configured login and each account it wrote (from its status), in two round trips."""
    pipe = client.pipeline(transaction=False)
    for login in logins:
        pipe.get(f"{STATUS_KEY_PREFIX}{login}")
    statuses = pipe.execute()
    names: list[tuple[str, str]] = []
    for login, status in zip(logins, statuses, strict=True):
        names.append((login, login))
        names += [(account, login) for account in status_accounts(status) if account != login]
    pipe = client.pipeline(transaction=False)
    for name, _ in names:
        pipe.get(f"{TOKEN_KEY_PREFIX}{name}")
        pipe.ttl(f"{TOKEN_KEY_PREFIX}{name}")
    values = pipe.execute()
    rows = []
    for index, (name, login) in enumerate(names):
        token, ttl = values[2 * index], values[2 * index + 1]
        rows.append(_row(name, login, token, ttl, now, expiring_within_s))
    return rows


def _row(
    name: str, login: str, token: object, ttl: int, now: float, expiring_within_s: float
) -> TokenRow:
    if not isinstance(token, str):
        return TokenRow(name, login, None, "missing", None)
    state = token_state(token, now)
    if state == "valid" and (token_expiry(token) or now) - now < expiring_within_s:
        state = "expiring"
    return TokenRow(name, login, ttl if ttl >= 0 else None, state, fingerprint(token))


_MARKS = {"valid": "✅ valid", "expiring": "⚠️  expiring", "missing": "❌ missing"}


def render_token_table(rows: Iterable[TokenRow]) -> str:
    lines = []
    for row in rows:
        key = f"{TOKEN_KEY_PREFIX}{row.name}"
        ttl = f"TTL: {row.ttl_s}s ({row.ttl_s / 3600:.2f}h)" if row.ttl_s is not None else "TTL: -"
        mark = _MARKS.get(row.state, f"❌ {row.state}")
        print_fp = f" | {row.fingerprint}" if row.fingerprint else ""
        lines.append(f"{key:<32} | {ttl:<22} | {mark}{print_fp}")
    return "\n".join(lines)
