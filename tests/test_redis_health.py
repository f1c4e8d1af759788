"""Why Redis does not answer, named with a hint; logged once per change, counted every time."""

from __future__ import annotations

import socket
import ssl

import pytest
import redis
from prometheus_client import generate_latest
from redis.backoff import NoBackoff
from redis.retry import Retry
from structlog.testing import capture_logs

from daemon.metrics import Metrics
from daemon.sim.redis_server import RedisServer, free_port
from daemon.store.health import RedisHealth, diagnose


def _raised_from(cause: BaseException, error: redis.RedisError) -> redis.RedisError:
    try:
        raise error from cause
    except redis.RedisError as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (redis.AuthenticationError("invalid username-password pair"), "auth"),
        (redis.ResponseError("WRONGPASS invalid username-password pair"), "auth"),
        (redis.exceptions.NoPermissionError("NOPERM this user has no permissions"), "auth"),
        (
            _raised_from(ssl.SSLCertVerificationError("verify failed"), redis.ConnectionError()),
            "tls",
        ),
        (redis.ConnectionError("[SSL: WRONG_VERSION_NUMBER] wrong version number"), "tls"),
        (redis.TimeoutError("Timeout reading from socket"), "timeout"),
        (_raised_from(ConnectionRefusedError(111, "refused"), redis.ConnectionError()), "refused"),
        (
            _raised_from(socket.gaierror(-2, "Name or service not known"), redis.ConnectionError()),
            "dns",
        ),
        (redis.ConnectionError("Connection closed by server."), "other"),
        (
            redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
            "readonly",
        ),
        (redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"), "readonly"),
        (
            redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
            "oom",
        ),
        (redis.RedisError("something new"), "other"),
        (redis.ResponseError("CROSSSLOT Keys in request don't hash to the same slot"), "other"),
        (redis.exceptions.ClusterCrossSlotError("Keys in request don't hash"), "other"),
    ],
)
def test_errors_are_named(error: redis.RedisError, reason: str) -> None:
    diagnosis = diagnose(error)
    assert diagnosis.reason == reason
    assert diagnosis.hint
    if "CROSSSLOT" in str(error) or isinstance(error, redis.exceptions.ClusterCrossSlotError):
        assert "Enterprise policy" in diagnosis.hint


def test_a_refused_password_read_from_a_file_names_the_file() -> None:
    error = redis.AuthenticationError("invalid username-password pair")
    hint = diagnose(error, "REDIS_PASSWORD_FILE /run/secrets/redis_password").hint
    assert hint.startswith("WRONGPASS: the password in REDIS_PASSWORD_FILE /run/secrets/")


def test_real_servers_are_diagnosed(own_redis_server: RedisServer) -> None:
    def reason(**options: object) -> str:
        client = redis.Redis(
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
            **options,  # type: ignore[arg-type]
        )
        with pytest.raises(redis.RedisError) as caught:
            client.ping()
        client.close()
        return diagnose(caught.value).reason

    assert reason(host="127.0.0.1", port=free_port()) == "refused"
    assert reason(host="127.0.0.1", port=own_redis_server.port, ssl=True) == "tls"
    own_redis_server.client().config_set("requirepass", "right-Pa55")
    assert reason(host="127.0.0.1", port=own_redis_server.port, password="wrong") == "auth"


def test_down_is_logged_once_per_change_and_counted_every_time() -> None:
    metrics = Metrics()
    health = RedisHealth("redis://h:1/0", metrics)
    refused = _raised_from(ConnectionRefusedError(111, "refused"), redis.ConnectionError("x"))
    with capture_logs() as logs:
        health.succeeded()
        for _ in range(3):
            health.failed(refused)
        health.failed(redis.AuthenticationError("WRONGPASS"))  # a new reason: said again
        assert not health.came_back.is_set()
        health.succeeded()
    assert [(e["event"], e.get("reason")) for e in logs] == [
        ("redis.up", None),
        ("redis.down", "refused"),
        ("redis.down", "auth"),
        ("redis.up", None),
    ]
    assert health.came_back.is_set()
    text = generate_latest(metrics.registry).decode()
    assert 'orca_redis_errors_total{reason="refused"} 3.0' in text
    assert 'orca_redis_errors_total{reason="auth"} 1.0' in text
    assert "orca_redis_up 1.0" in text
    assert health.describe() == {"up": True}
