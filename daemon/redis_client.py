"""The one Redis connection pool of the process, shared by the daemon and library users.

from daemon.redis_client import get_redis_client
token = get_redis_client().get("token:APEX_266668")
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import redis
import structlog
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from daemon.config import RedisSettings, load_redis_settings, read_environment
from daemon.constants import (
    REDIS_COMMAND_RETRIES,
    REDIS_HEALTH_CHECK_INTERVAL_S,
    REDIS_POOL_WAIT_S,
    REDIS_RETRY_BACKOFF_BASE_S,
    REDIS_RETRY_BACKOFF_CAP_S,
    REDIS_SOCKET_TIMEOUT_S,
)

log = structlog.get_logger("daemon.redis")
_lock = threading.Lock()
_client: redis.Redis | None = None
_client_settings: RedisSettings | None = None


def build_pool(settings: RedisSettings) -> redis.BlockingConnectionPool:
    """A blocking pool: concurrent refreshes wait for a free connection instead of failing."""
    options: dict[str, Any] = {
        "max_connections": settings.max_connections,
        "timeout": REDIS_POOL_WAIT_S,
        "decode_responses": True,
        "socket_keepalive": True,
        "socket_connect_timeout": settings.socket_connect_timeout_s,
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "health_check_interval": REDIS_HEALTH_CHECK_INTERVAL_S,
        "retry": Retry(
            ExponentialWithJitterBackoff(
                cap=REDIS_RETRY_BACKOFF_CAP_S, base=REDIS_RETRY_BACKOFF_BASE_S
            ),
            REDIS_COMMAND_RETRIES,
        ),
        "client_name": "orca-token-daemon",
    }
    if settings.uses_tls:
        options["ssl_cert_reqs"] = settings.ssl_cert_reqs
        options["ssl_check_hostname"] = settings.ssl_cert_reqs == "required"
        if settings.ssl_ca_certs:
            options["ssl_ca_certs"] = settings.ssl_ca_certs
    if settings.url is not None:
        return redis.BlockingConnectionPool.from_url(settings.url.reveal(), **options)
    if settings.ssl:
        options["connection_class"] = redis.SSLConnection
    return redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username,
        password=settings.password.reveal() if settings.password else None,
        **options,
    )


def get_redis_client(settings: RedisSettings | None = None) -> redis.Redis:
    """The shared client. Without settings, the first call reads REDIS_* from the environment.

    Passing settings different from the current pool's replaces the pool (the daemon does this
    once at startup); later calls without settings keep whatever pool exists.
    """
    global _client, _client_settings
    with _lock:
        if _client is not None and (settings is None or settings == _client_settings):
            return _client
        if settings is None:
            settings = load_redis_settings(read_environment())
        if _client is not None:
            _client.connection_pool.disconnect()
        _client = redis.Redis(connection_pool=build_pool(settings))
        _client_settings = settings
        return _client


def close_redis_client() -> None:
    """Disconnect the shared pool; the next get_redis_client() builds a new one."""
    global _client, _client_settings
    with _lock:
        if _client is not None:
            _client.connection_pool.disconnect()
        _client, _client_settings = None, None


SCAN_BATCH = 1_000


def scan_batches(client: redis.Redis, match: str, batch: int = SCAN_BATCH) -> Iterator[list[str]]:
    """Keys matching `match`, found with SCAN (never KEYS, which blocks Redis), in lists of about
    `batch`: callers pipeline one round trip per list, and memory stays flat however many keys."""
    chunk: list[str] = []
    for key in client.scan_iter(match=match, count=batch):
        chunk.append(str(key))
        if len(chunk) >= batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class RedisHealth:
    """Whether Redis answered last, as one shared fact: the probe and every refresh report to
    it, and it logs only when the answer changes, never once per failed attempt."""

    def __init__(self, target: str, on_change: Callable[[bool], None] | None = None) -> None:
        self.target = target
        self.up: bool | None = None  # None until the first answer
        self._on_change = on_change
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        self._set(True, None)

    def failed(self, error: Exception) -> None:
        self._set(False, error)

    def _set(self, up: bool, error: Exception | None) -> None:
        with self._lock:
            if up == self.up:
                return
            self.up = up
        if up:
            log.info("redis.up", redis=self.target)
        else:
            log.error("redis.down", redis=self.target, error=str(error))
        if self._on_change is not None:
            self._on_change(up)
