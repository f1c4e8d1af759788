"""`orca:status:{login}`: one JSON object per login, written with every refresh and read by the
refresher (after a restart), the operator's views and the token history. One shape, one parser,
one writer."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TypeVar

import redis

from daemon.constants import STATUS_KEY_PREFIX
from daemon.logs import fingerprint
from daemon.outcomes import LoginState, Outcome
from daemon.store.client import get_many, read_all, scan_batches
from daemon.store.fence import fenced_set
from daemon.store.foreign import report_foreign
from daemon.store.lease import Fence
from daemon.token_format import parse_expiration_time
from daemon.values import json_object


def status_key(login: str) -> str:
    return f"{STATUS_KEY_PREFIX}{login}"


@dataclass(frozen=True)
class LoginStatus:
    """What operators (and a restarted daemon) know of a login. Times are ISO 8601 UTC."""

    login: str
    state: LoginState = LoginState.PENDING
    fingerprint: str | None = None  # of the token held, never the token
    expires_at: str | None = None
    issued_at: str | None = None
    source: Outcome | None = None  # login | renew | adopted
    accounts: tuple[str, ...] = ()
    failures: int = 0
    last_outcome: Outcome | None = None
    last_error: str | None = None
    last_success_at: str | None = None
    next_attempt_at: str | None = None
    updated_at: str | None = None
    instance: str | None = None
    notes: tuple[str, ...] = ()  # e.g. an account skipped because another login writes it
    when_budget_short: str | None = None  # wait | relogin (the accounts file's choice)
    route: str | None = None  # api | tradingview: how it logs in
    parked_until: str | None = None  # a wait nobody shortens (captcha, locked, lockout, 429)
    park_reason: Outcome | None = None
    credential: str | None = None  # Closed: a slow digest of the password it was closed with

    def to_json(self) -> str:
        value = asdict(self)
        value["accounts"] = list(self.accounts)
        value["notes"] = list(self.notes)
        return json.dumps(value)

    @classmethod
    def parse(cls, raw: object) -> LoginStatus | None:
        """A status as written by `to_json`; None when missing or unreadable. Unknown fields
        (a newer writer) are ignored, wrong types read as absent."""
        value = json_object(raw)
        if value is None or not isinstance(value.get("login"), str):
            return None
        return cls(
            login=value["login"],
            state=_enum(LoginState, value.get("state")) or LoginState.PENDING,
            fingerprint=_text(value.get("fingerprint")),
            expires_at=_text(value.get("expires_at")),
            issued_at=_text(value.get("issued_at")),
            source=_enum(Outcome, value.get("source")),
            accounts=_names(value.get("accounts")),
            failures=value["failures"] if _count(value.get("failures")) else 0,
            last_outcome=_enum(Outcome, value.get("last_outcome")),
            last_error=_text(value.get("last_error")),
            last_success_at=_text(value.get("last_success_at")),
            next_attempt_at=_text(value.get("next_attempt_at")),
            updated_at=_text(value.get("updated_at")),
            instance=_text(value.get("instance")),
            notes=_names(value.get("notes")),
            when_budget_short=_text(value.get("when_budget_short")),
            route=_text(value.get("route")),
            parked_until=_text(value.get("parked_until")),
            park_reason=_enum(Outcome, value.get("park_reason")),
            credential=_text(value.get("credential")),
        )

    def expiry_of(self, token: str) -> float | None:
        """The expiry recorded for `token`, when this status describes that very token."""
        if self.fingerprint is None or self.fingerprint != fingerprint(token):
            return None
        return parse_expiration_time(self.expires_at)

    def issued_at_s(self) -> float | None:
        return parse_expiration_time(self.issued_at)


def status_item(status: LoginStatus, ttl_s: int) -> tuple[str, str, int]:
    """(key, value, ttl) of a status, to be written with the token keys it describes."""
    return status_key(status.login), status.to_json(), ttl_s


def write_status(
    client: redis.Redis, status: LoginStatus, ttl_s: int, *, fence: Fence | None = None
) -> None:
    """SET orca:status:{login}, fenced by the login's lease when `fence` is given."""
    fenced_set(client, fence, [status_item(status, ttl_s)])


def read_statuses(client: redis.Redis, logins: list[str]) -> list[LoginStatus | None]:
    """Each login's status in one round trip (None where there is none)."""
    pipe = client.pipeline(transaction=False)
    for login in logins:
        pipe.get(status_key(login))
    if not logins:
        return []
    found = []
    for login, raw in zip(logins, read_all(pipe), strict=True):
        status = LoginStatus.parse(raw)
        if status is None and raw is not None:
            report_foreign(status_key(login), "not a login status (replaced with the next)", raw)
        found.append(status)
    return found


def scan_statuses(client: redis.Redis) -> Iterator[LoginStatus]:
    """Every login's status in Redis (SCAN, pipelined batches)."""
    for chunk in scan_batches(client, STATUS_KEY_PREFIX + "*"):
        for raw in get_many(client, chunk):
            status = LoginStatus.parse(raw)
            if status is not None:
                yield status


def statuses_by_name(statuses: Iterable[LoginStatus | None]) -> dict[str, LoginStatus]:
    """Each token name (a login's and its accounts') -> the status of the login writing it."""
    found: dict[str, LoginStatus] = {}
    for status in statuses:
        if status is not None:
            names = (status.login, *status.accounts)
            found.update({name: status for name in names if name not in found})
    return found


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(a for a in value if isinstance(a, str) and a)


E = TypeVar("E", bound=StrEnum)


def _enum(kind: type[E], value: object) -> E | None:
    try:
        return kind(value) if isinstance(value, str) else None
    except ValueError:
        return None
