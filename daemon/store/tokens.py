"""Token keys in Redis: what a valid token is, how long its key lives, writing a login's keys,
and reading them (trading programs: `get_token("APEX_266668")`).

A token key never holds an empty, malformed or expired token: every write goes through
`write_login_tokens`, which checks each token and clamps each TTL to the token's real life.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import redis

from daemon.constants import (
    BUDGET_WINDOW_S,
    MD_TOKEN_KEY_PREFIX,
    TOKEN_KEY_PREFIX,
)
from daemon.logs import fingerprint
from daemon.outcomes import TokenState
from daemon.store.client import get_redis_client, read_all, scan_batches
from daemon.store.fence import fenced_set
from daemon.store.lease import Fence
from daemon.store.requests import push_request
from daemon.store.status import (
    LoginStatus,
    read_statuses,
    scan_statuses,
    status_item,
    statuses_by_name,
)
from daemon.timescale import key_margin_s
from daemon.token_format import jwt_expiry, token_problem

__all__ = [
    "EXPIRING_SOON_S",
    "InvalidTokenError",
    "StoredToken",
    "TokenKey",
    "TokenSet",
    "delete_token",
    "fingerprint",
    "get_md_token",
    "get_token",
    "iter_tokens",
    "judged",
    "key_names",
    "key_ttl_s",
    "login_tokens",
    "md_token_key",
    "read_token_keys",
    "report_unauthorized",
    "scan_token_keys",
    "token_exists",
    "token_key",
    "token_state",
    "token_ttl",
    "write_login_tokens",
]


class InvalidTokenError(ValueError):
    """A token that must not be written. The message names the fault, never the token."""


EXPIRING_SOON_S = 15 * 60


def token_key(name: str) -> str:
    """token:{name}, read by trading programs (SPEC, Redis keys)."""
    return TOKEN_KEY_PREFIX + name


def md_token_key(name: str) -> str:
    """mdtoken:{name}, the market-data token beside it."""
    return MD_TOKEN_KEY_PREFIX + name


def token_state(
    token: object,
    recorded_expiry: float | None,
    now: float,
    *,
    expiring_within_s: float = EXPIRING_SOON_S,
) -> TokenState:
    """What a token key's value is worth to a reader: the one definition of valid, shared by
    `check`, `tokens list`, `health` and `/readyz`. Validity comes from the expiry the daemon
    recorded when it wrote this very token (see `LoginStatus.expiry_of`); only a token no
    record describes falls back to a JWT's `exp`. An opaque token without a record is invalid:
    nothing says when it dies."""
    if token is None:
        return TokenState.MISSING
    if token_problem(token) is not None:
        return TokenState.INVALID
    expiry = recorded_expiry if recorded_expiry is not None else jwt_expiry(token)
    if expiry is None or expiry <= now:
        return TokenState.INVALID
    return TokenState.EXPIRING if expiry - now < expiring_within_s else TokenState.VALID


def judged(
    token: str | None,
    status: LoginStatus | None,
    now: float,
    *,
    expiring_within_s: float = EXPIRING_SOON_S,
) -> TokenState:
    """`token_state` of a key's value, by the expiry its login's status recorded for it."""
    expiry = status.expiry_of(token) if status is not None and token is not None else None
    return token_state(token, expiry, now, expiring_within_s=expiring_within_s)


@dataclass(frozen=True)
class TokenKey:
    """One token:{name} key as read: its token (None when missing or not a string) and TTL."""

    name: str
    token: str | None
    ttl_s: int  # Redis's answer: -1 no expiry, -2 no such key (or not asked: with_ttl=False)


def read_token_keys(
    client: redis.Redis, names: Sequence[str], *, with_ttl: bool = True
) -> list[TokenKey]:
    """The one reader of token keys: each name's token (and TTL), in one round trip. The
    daemon reads without TTLs: its ACL user has no TTL command."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(token_key(name))
        if with_ttl:
            pipe.ttl(token_key(name))
    values = read_all(pipe) if names else []
    step = 2 if with_ttl else 1
    ttls = values[1::2] if with_ttl else [-2] * len(names)
    return [
        TokenKey(name, token if isinstance(token, str) else None, int(ttl))
        for name, token, ttl in zip(names, values[::step], ttls, strict=True)
    ]


def scan_token_keys(
    client: redis.Redis, match: str = "*", batch: int = 500
) -> Iterator[list[TokenKey]]:
    """Every token:{match} key, found with SCAN (never KEYS), read in batches."""
    for chunk in scan_batches(client, token_key(match), batch):
        yield read_token_keys(client, [str(key)[len(TOKEN_KEY_PREFIX) :] for key in chunk])


def key_ttl_s(
    expires_at: float,
    lifetime_s: float,
    now: float,
    max_ttl_s: int,
    window_s: float = BUDGET_WINDOW_S,
) -> int:
    """min(ORCA_TOKEN_TTL, time left - margin) (`key_margin_s`)."""
    margin = key_margin_s(lifetime_s, window_s)
    return int(min(max_ttl_s, expires_at - now - margin))


@dataclass(frozen=True)
class TokenSet:
    """What one login's refresh writes: its tokens, under its own name and each account's."""

    login: str
    access_token: str
    expires_at: float
    lifetime_s: float
    md_access_token: str | None = None
    accounts: tuple[str, ...] = ()
    md_expires_at: float | None = None  # the md token's own expiry (its JWT `exp`, or ours)
    window_s: float = BUDGET_WINDOW_S  # the key margin's time-scale (ORCA_BUDGET_WINDOW)

    def __repr__(self) -> str:
        return (
            f"TokenSet(login={self.login!r}, token={fingerprint(self.access_token)}, "
            f"expires_at={self.expires_at:.0f}, accounts={len(self.accounts)})"
        )

    @property
    def names(self) -> tuple[str, ...]:
        return key_names(self.login, self.accounts)


def key_names(login: str, accounts: tuple[str, ...]) -> tuple[str, ...]:
    """Every name a login's token is written under: the login, then each of its accounts."""
    return (login, *(a for a in accounts if a != login))


def write_login_tokens(
    client: redis.Redis,
    tokens: TokenSet,
    *,
    now: float,
    max_ttl_s: int,
    status: LoginStatus | None = None,
    fence: Fence | None = None,
) -> int:
    """Write token:/mdtoken: for the login and its accounts, and its status, in one round trip,
    all or nothing; with `fence`, only while the login's lease holds it (`daemon.store.fence`).

    Returns the TTL written. Raises InvalidTokenError (writing nothing) for a malformed or
    expired token or one with too little life left for a key, LeaseLost when fenced out;
    redis errors propagate.
    """
    ttl = _checked_ttl(tokens, tokens.access_token, tokens.expires_at, now, max_ttl_s)
    # mdtoken: the md token while its own life allows a key, else the access token itself.
    md_token, md_ttl = tokens.access_token, ttl
    if tokens.md_access_token is not None:
        md_expiry = min(
            tokens.md_expires_at or tokens.expires_at,
            jwt_expiry(tokens.md_access_token) or math.inf,
        )
        try:
            md_ttl = _checked_ttl(tokens, tokens.md_access_token, md_expiry, now, max_ttl_s)
            md_token = tokens.md_access_token
        except InvalidTokenError:
            md_token, md_ttl = tokens.access_token, ttl
    items: list[tuple[str, str, int]] = []
    for name in tokens.names:
        items.append((token_key(name), tokens.access_token, ttl))
        items.append((md_token_key(name), md_token, md_ttl))
    if status is not None:
        items.append(status_item(status, max_ttl_s))
    fenced_set(client, fence, items)
    return ttl


def _checked_ttl(
    tokens: TokenSet, token: str, expires_at: float, now: float, max_ttl_s: int
) -> int:
    problem = token_problem(token)
    if problem is not None:
        raise InvalidTokenError(f"not a token: {problem}")
    if expires_at <= now:
        raise InvalidTokenError(f"token {fingerprint(token)} has expired")
    ttl = key_ttl_s(expires_at, tokens.lifetime_s, now, max_ttl_s, tokens.window_s)
    if ttl < 1:
        raise InvalidTokenError(f"token {fingerprint(token)} has too little life left for a key")
    return ttl


# -- reading, for trading programs and operators (the reference's Token Management 1-6) ----------


def get_token(name: str, *, client: redis.Redis | None = None) -> str | None:
    """GET token:{name}: the access token, or None."""
    value = (client or get_redis_client()).get(token_key(name))
    return value if isinstance(value, str) else None


def get_md_token(name: str, *, client: redis.Redis | None = None) -> str | None:
    """GET mdtoken:{name}: the market-data token, or None."""
    value = (client or get_redis_client()).get(md_token_key(name))
    return value if isinstance(value, str) else None


def token_ttl(name: str, *, client: redis.Redis | None = None) -> int:
    """TTL token:{name}: seconds left; -1 no expiry; -2 no such key (Redis's own answers)."""
    return int((client or get_redis_client()).ttl(token_key(name)))


def token_exists(name: str, *, client: redis.Redis | None = None) -> bool:
    return bool((client or get_redis_client()).exists(token_key(name)))


def report_unauthorized(name: str, *, client: redis.Redis | None = None) -> str:
    """Tell the daemon that Tradovate answered 401 to the token of `name` (a login or an
    account): it checks the token with a call that spends no budget and, when Tradovate refuses
    it, deletes its keys at once and logs in again. Returns the request id; no waiting."""
    return push_request(client or get_redis_client(), name, verify=True)


def delete_token(name: str, *, client: redis.Redis | None = None) -> bool:
    """DEL token:{name} and mdtoken:{name}. A running daemon writes the token it holds back
    within seconds; ask it for a new one with `orca-tokens tokens refresh NAME`."""
    return bool((client or get_redis_client()).delete(token_key(name), md_token_key(name)))


def login_tokens(
    client: redis.Redis,
    logins: list[str],
    now: float,
    *,
    expiring_within_s: float = EXPIRING_SOON_S,
) -> dict[str, tuple[str | None, TokenState]]:
    """Each login's own token key and what it is worth, judged by its status."""
    statuses = read_statuses(client, logins)
    return {
        key.name: (key.token, judged(key.token, status, now, expiring_within_s=expiring_within_s))
        for key, status in zip(
            read_token_keys(client, logins, with_ttl=False), statuses, strict=True
        )
    }


@dataclass(frozen=True)
class StoredToken:
    """A token key as an operator sees it: never the token itself."""

    name: str
    ttl_s: int
    state: TokenState
    fingerprint: str
    expires_at: float | None
    login: str | None  # the login whose status records this token, when one does


def iter_tokens(
    *, client: redis.Redis | None = None, match: str = "*", batch: int = 500
) -> Iterator[StoredToken]:
    """Every token:{match} key, found with SCAN (never KEYS), read in pipelined batches, each
    judged by the expiry its login's status recorded."""
    client = client or get_redis_client()
    owners = statuses_by_name(scan_statuses(client))
    for keys in scan_token_keys(client, match, batch):
        now = time.time()
        for key in keys:
            if key.token is None:
                continue  # expired between SCAN and GET, or not a string key
            owner = owners.get(key.name)
            expiry = owner.expiry_of(key.token) if owner else None
            yield StoredToken(
                name=key.name,
                ttl_s=key.ttl_s,
                state=judged(key.token, owner, now),
                fingerprint=fingerprint(key.token),
                expires_at=expiry if expiry is not None else jwt_expiry(key.token),
                login=owner.login if owner else None,
            )
