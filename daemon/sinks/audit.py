"""Token history in PostgreSQL (Supabase is PostgreSQL): one row per token issued, per login or
account name. `orca-tokens sync` backfills from Redis; with ORCA_AUDIT_DSN set the daemon records
each new token as it refreshes, from a queue of its own, so PostgreSQL being down never blocks
or fails a refresh (`sync` fills any gap later). The raw token is stored only when asked.

Needs psycopg 3: pip install 'orca-token-daemon[audit]'.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import structlog

from daemon.constants import AUDIT_QUEUE_SIZE
from daemon.sinks.background import BackgroundSink
from daemon.store.status import scan_statuses, statuses_by_name
from daemon.store.tokens import fingerprint, scan_token_keys

log = structlog.get_logger("daemon.sinks.audit")

SCHEMA = """
CREATE TABLE IF NOT EXISTS orca_token_history (
    name        text        NOT NULL,
    login       text        NOT NULL,
    fingerprint text        NOT NULL,
    issued_at   timestamptz,
    expires_at  timestamptz,
    source      text,
    instance    text,
    token       text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, fingerprint)
)
"""
INSERT = """
INSERT INTO orca_token_history
    (name, login, fingerprint, issued_at, expires_at, source, instance, token)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (name, fingerprint) DO NOTHING
"""
FILL_RAW_SQL = """
UPDATE orca_token_history SET token = %s
WHERE name = %s AND fingerprint = %s AND token IS NULL
"""


@dataclass(frozen=True)
class TokenRecord:
    name: str
    login: str
    fingerprint: str
    issued_at: datetime | None
    expires_at: datetime | None
    source: str | None
    instance: str | None
    token: str | None = None  # only with --include-token

    def __repr__(self) -> str:
        return f"TokenRecord(name={self.name!r}, fingerprint={self.fingerprint})"

    def row(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.login,
            self.fingerprint,
            self.issued_at,
            self.expires_at,
            self.source,
            self.instance,
            self.token,
        )


def _at(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


def connect(dsn: str) -> Any:
    """A psycopg connection with the table created when missing."""
    try:
        import psycopg
    except ImportError:
        raise RuntimeError(
            "token history needs psycopg 3: pip install 'orca-token-daemon[audit]'"
        ) from None
    connection = psycopg.connect(dsn, connect_timeout=5, autocommit=False)
    with connection.transaction():
        connection.execute(SCHEMA)
    return connection


def write(connection: Any, records: Iterable[TokenRecord]) -> int:
    """Insert each record once (idempotent); returns how many rows were new."""
    inserted = 0
    with connection.transaction(), connection.cursor() as cursor:
        for record in records:
            cursor.execute(INSERT, record.row())
            inserted += cursor.rowcount
            if record.token is not None:
                cursor.execute(FILL_RAW_SQL, (record.token, record.name, record.fingerprint))
    return inserted


def records_from_redis(client: redis.Redis, *, include_token: bool) -> Iterator[TokenRecord]:
    """A record for every token key in Redis that its login's orca:status: describes (login,
    issue, expiry, source and instance as recorded when it was written)."""
    owners = statuses_by_name(scan_statuses(client))
    for keys in scan_token_keys(client):
        for key in keys:
            token, owner = key.token, owners.get(key.name)
            if token is None or owner is None or owner.expiry_of(token) is None:
                continue  # not a token the daemon wrote: nothing says what it is
            yield TokenRecord(
                name=key.name,
                login=owner.login,
                fingerprint=fingerprint(token),
                issued_at=_at(owner.issued_at_s()),
                expires_at=_at(owner.expiry_of(token)),
                source=owner.source,
                instance=owner.instance,
                token=token if include_token else None,
            )


class AuditRecorder(BackgroundSink[list[TokenRecord]]):
    """Records each new token from a thread of its own; never blocks, never raises."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._up: bool | None = None
        self._connection: Any = None  # used on the sink's thread only
        super().__init__("audit", AUDIT_QUEUE_SIZE)

    def record(
        self,
        login: str,
        names: Iterable[str],
        token: str,
        *,
        issued_at: float,
        expires_at: float,
        source: str,
        instance: str,
    ) -> None:
        batch = [
            TokenRecord(
                name, login, fingerprint(token), _at(issued_at), _at(expires_at), source, instance
            )
            for name in names
        ]
        if not self._queue_item(batch):
            log.warning("audit.dropped", login=login, hint="orca-tokens sync backfills from Redis")

    def close(self, timeout: float = 3.0) -> None:
        super().close(timeout)

    def deliver(self, item: list[TokenRecord]) -> None:
        try:
            self._connection = self._connection or connect(self._dsn)
            write(self._connection, item)
        except Exception as error:  # psycopg's errors, or psycopg missing: never fatal
            _close_quietly(self._connection)
            self._connection = None
            self._set_up(False, error)
            return
        self._set_up(True, None)

    def finished(self) -> None:
        _close_quietly(self._connection)

    def _set_up(self, up: bool, error: Exception | None) -> None:
        if up == self._up:
            return
        self._up = up
        if up:
            log.info("audit.up")
        else:
            log.error("audit.down", error=type(error).__name__, detail=str(error)[:200])


def _close_quietly(connection: Any) -> None:
    if connection is not None:
        try:
            connection.close()
        except Exception:  # closing a broken connection may itself fail; nothing to do
            log.debug("audit.close_failed")
