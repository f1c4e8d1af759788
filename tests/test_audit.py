"""Token history in the machine's real PostgreSQL (127.0.0.1:5432, database test)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer, free_port
from daemon.sim.tradovate import FakeTradovate
from daemon.sinks.audit import AuditRecorder
from daemon.store.tokens import fingerprint
from tests.helpers import DaemonProcess, Run, daemon_env, seed


def rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as connection:
        return connection.execute(
            "SELECT name, login, fingerprint, source, token IS NOT NULL, expires_at IS NOT NULL"
            " FROM orca_token_history ORDER BY name"
        ).fetchall()


def test_sync_creates_the_table_and_is_idempotent(
    cli: Callable[[dict[str, str]], Run], redis_server: RedisServer, postgres_dsn: str
) -> None:
    tokens = seed(redis_server)
    run = cli({"REDIS_URL": redis_server.url, "ORCA_AUDIT_DSN": postgres_dsn})
    code, out, _ = run("sync")
    assert (code, out) == (0, "synced 3 tokens: 3 new, 0 already there\n")
    expected_fp = fingerprint(tokens["APEX_1"])
    assert rows(postgres_dsn) == [
        ("APEX_1", "APEX_1", expected_fp, "login", False, True),
        ("PA1", "APEX_1", expected_fp, "login", False, True),
        ("PA2", "APEX_1", expected_fp, "login", False, True),
    ]
    assert run("sync")[1] == "synced 3 tokens: 0 new, 3 already there\n"
    assert run("sync", "--include-token")[0] == 0
    assert [row[4] for row in rows(postgres_dsn)] == [True, True, True]
    assert len(rows(postgres_dsn)) == 3


def test_sync_says_when_postgresql_is_unreachable(
    cli: Callable[[dict[str, str]], Run], redis_server: RedisServer
) -> None:
    dsn = f"postgresql://postgres:pg-Secret-9@127.0.0.1:{free_port()}/test"
    run = cli({"REDIS_URL": redis_server.url, "ORCA_AUDIT_DSN": dsn})
    code, _, err = run("sync")
    assert code == 1
    assert err.startswith("orca-tokens: cannot reach PostgreSQL")
    assert "pg-Secret-9" not in err


def test_the_daemon_records_each_new_token(
    redis_server: RedisServer, served_tradovate: FakeTradovate, postgres_dsn: str, tmp_path: Path
) -> None:
    env = daemon_env(served_tradovate, redis_server.url, ORCA_AUDIT_DSN=postgres_dsn)
    assert DaemonProcess(env, "run", "--once", cwd=str(tmp_path)).wait() == 0
    # --once exits after handing the records to the recorder, which drains on close.
    recorded = wait_for(
        lambda: len(rows(postgres_dsn)) == 17 and rows(postgres_dsn), what="17 rows"
    )
    assert {row[3] for row in recorded} == {"login"}
    assert not any(row[4] for row in recorded)  # no raw tokens unless asked


def test_postgresql_down_never_blocks_a_refresh(tmp_path: Path) -> None:
    recorder = AuditRecorder(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    started = time.monotonic()
    for n in range(50):
        recorder.record(
            "APEX_1",
            ["APEX_1", "PA1"],
            f"token-{n}",
            issued_at=0,
            expires_at=60,
            source="login",
            instance="test",
        )
    assert time.monotonic() - started < 1  # queued, not sent inline
    recorder.close(timeout=1)


def test_a_refresh_succeeds_while_postgresql_is_down(
    redis_server: RedisServer, served_tradovate: FakeTradovate, tmp_path: Path
) -> None:
    env = daemon_env(
        served_tradovate,
        redis_server.url,
        ORCA_AUDIT_DSN=f"postgresql://postgres@127.0.0.1:{free_port()}/test",
    )
    process = DaemonProcess(env, "run", "--once", cwd=str(tmp_path))
    assert process.wait() == 0
    assert process.event("audit.down")["level"] == "error"
    assert len(redis_server.client().keys("token:*")) == 17


@pytest.fixture(autouse=True)
def _psycopg_present() -> None:
    assert psycopg.__version__  # the audit extra is part of the dev install


def test_a_direct_tokens_refresh_records_its_tokens_too(
    cli: Callable[[dict[str, str]], Run],
    redis_server: RedisServer,
    served_tradovate: FakeTradovate,
    postgres_dsn: str,
) -> None:
    """With no daemon running, `tokens refresh` refreshes here, through the same path as
    `run --once`: its history records are delivered before it exits."""
    run = cli(daemon_env(served_tradovate, redis_server.url, ORCA_AUDIT_DSN=postgres_dsn))
    code, out, _ = run("tokens", "refresh")
    assert code == 0
    assert out.count("✅") == 4
    assert len(rows(postgres_dsn)) == 17
