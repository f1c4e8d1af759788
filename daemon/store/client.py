"""The one Redis connection pool of the process, shared by the daemon and library users.

from daemon.store.client import get_redis_client
token = get_redis_client().get("token:APEX_266668")
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, cast

import redis
import structlog
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
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


def _options(settings: RedisSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "max_connections": settings.max_connections,
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
    return options


def build_pool(settings: RedisSettings) -> redis.BlockingConnectionPool:
    """A blocking pool: concurrent refreshes wait for a free connection instead of failing."""
    options = {**_options(settings), "timeout": REDIS_POOL_WAIT_S}
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
        disconnect(_client)
        _client = build_client(settings)
        _client_settings = settings
        return _client


def build_client(settings: RedisSettings) -> redis.Redis:
    """A client on a pool of its own: one blocking pool, or one per node of a Redis Cluster."""
    if not settings.cluster:
        return redis.Redis(connection_pool=build_pool(settings))
    options = {**_options(settings), "connection_pool_class": redis.BlockingConnectionPool}
    if settings.url is not None:
        cluster = RedisCluster.from_url(settings.url.reveal(), **options)
    else:
        cluster = RedisCluster(
            host=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password.reveal() if settings.password else None,
            ssl=settings.ssl,
            **options,
        )
    # RedisCluster speaks the same commands this project uses (the helpers below cover the
    # ones it must split by slot), though it is no subclass of redis.Redis.
    return cast(redis.Redis, cluster)


def is_cluster(client: redis.Redis) -> bool:
    return isinstance(client, RedisCluster)


def pipeline(client: redis.Redis, *, transaction: bool) -> redis.client.Pipeline:
    """MULTI/EXEC where one server holds every key; on a cluster, commands are grouped by node
    (redis-py sends each node its share in one round trip) and the atomicity is per key."""
    return client.pipeline(transaction=transaction and not is_cluster(client))


def key_count(client: redis.Redis) -> int:
    """DBSIZE, summed over every primary of a cluster."""
    if is_cluster(client):
        return int(cast(RedisCluster, client).dbsize(target_nodes=RedisCluster.PRIMARIES))
    return int(client.dbsize())


def server_info(client: redis.Redis, section: str) -> dict[str, dict[str, Any]]:
    """INFO `section` of every server: {"host:port": {...}}, one entry per cluster primary."""
    if is_cluster(client):
        per_node = cast(RedisCluster, client).info(section, target_nodes=RedisCluster.PRIMARIES)
        return {str(node): dict(info) for node, info in per_node.items()}
    kwargs = client.connection_pool.connection_kwargs
    return {f"{kwargs.get('host')}:{kwargs.get('port')}": dict(client.info(section))}


def get_many(client: redis.Redis, keys: list[str]) -> list[Any]:
    """GET of many keys in one round trip (per node on a cluster, where MGET must not span
    slots)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return list(pipe.execute()) if keys else []


def disconnect(client: redis.Redis | None) -> None:
    if client is None:
        return
    if is_cluster(client):
        client.close()
    else:
        client.connection_pool.disconnect()


def close_redis_client() -> None:
    """Disconnect the shared pool; the next get_redis_client() builds a new one."""
    global _client, _client_settings
    with _lock:
        disconnect(_client)
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
