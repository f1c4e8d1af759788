"""The one Redis connection pool of the process, shared by the daemon and library users.

from daemon.store.client import get_redis_client
token = get_redis_client().get("token:APEX_266668")
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import redis
import structlog
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from daemon.config import RedisSettings, load_redis_settings, read_environment
from daemon.constants import (
    LEASE_IO_TIMEOUT_S,
    REDIS_COMMAND_RETRIES,
    REDIS_HEALTH_CHECK_INTERVAL_S,
    REDIS_KEEPALIVE_IDLE_S,
    REDIS_KEEPALIVE_INTERVAL_S,
    REDIS_KEEPALIVE_PROBES,
    REDIS_POOL_WAIT_S,
    REDIS_RETRY_BACKOFF_BASE_S,
    REDIS_RETRY_BACKOFF_CAP_S,
    REDIS_RETRY_BUDGET_S,
    REDIS_SOCKET_TIMEOUT_S,
)
from daemon.store.connections import (
    WRONG_NODE_ERRORS,
    Connection,
    ConnectionPool,
    SSLConnection,
)
from daemon.store.credentials import credentials_for, without_credentials
from daemon.store.foreign import report_foreign

log = structlog.get_logger("daemon.redis")
T = TypeVar("T")
_lock = threading.Lock()
_client: redis.Redis | None = None
_client_settings: RedisSettings | None = None


class BoundedRetry(Retry):
    """redis-py's Retry (attempts, backoff with jitter), also bounded by total time: no retry
    starts once `budget_s` has passed since the first try. The one retry layer of every Redis
    call; a refresh that still fails is retried by the refresh policy, later."""

    def __init__(self, retries: int, budget_s: float) -> None:
        super().__init__(
            ExponentialWithJitterBackoff(
                cap=REDIS_RETRY_BACKOFF_CAP_S, base=REDIS_RETRY_BACKOFF_BASE_S
            ),
            retries,
            # A node that cannot take the command is left, like a broken connection: the next
            # try connects afresh (daemon.store.connections).
            supported_errors=(
                redis.ConnectionError,
                redis.TimeoutError,
                socket.timeout,
                *WRONG_NODE_ERRORS,
            ),
        )
        self.budget_s = budget_s

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        deadline = time.monotonic() + self.budget_s

        def retryable(error: Exception) -> bool:
            in_time = time.monotonic() < deadline
            return in_time and (is_retryable is None or is_retryable(error))

        return super().call_with_retry(do, fail, retryable, with_failure_count)


_KEEPALIVE = {
    option: value
    for name, value in (
        ("TCP_KEEPIDLE", REDIS_KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", REDIS_KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", REDIS_KEEPALIVE_PROBES),
    )
    if (option := getattr(socket, name, None)) is not None  # Linux names them all
}


def _options(settings: RedisSettings, *, role: str = "main") -> dict[str, Any]:
    """Every call has a deadline: connect (TLS handshake included) within the connect timeout,
    each command within the socket timeout. The lease and heartbeat client ("lease") answers
    well within the lease's TTL and never retries: the next membership round is its retry."""
    lease = role == "lease"
    options: dict[str, Any] = {
        "max_connections": 2 if lease else settings.max_connections,
        "decode_responses": True,
        # Redis is shared: a value that is not UTF-8 (any program may SET one) is read with
        # U+FFFD in place of the bad bytes, which no token and no JSON state accepts, instead of
        # raising UnicodeDecodeError out of a loop that catches RedisError.
        "encoding_errors": "replace",
        "socket_keepalive": True,
        "socket_keepalive_options": _KEEPALIVE,
        # RESP2, pinned: under RESP3 redis-py 8 relaxes socket timeouts to 10 s while a server
        # announces maintenance, which would stretch the lease client's 1 s deadline.
        "protocol": 2,
        "socket_connect_timeout": (
            min(settings.socket_connect_timeout_s, LEASE_IO_TIMEOUT_S)
            if lease
            else settings.socket_connect_timeout_s
        ),
        "socket_timeout": LEASE_IO_TIMEOUT_S if lease else REDIS_SOCKET_TIMEOUT_S,
        "health_check_interval": REDIS_HEALTH_CHECK_INTERVAL_S,
        "retry": BoundedRetry(0 if lease else REDIS_COMMAND_RETRIES, REDIS_RETRY_BUDGET_S),
        "client_name": f"orca-token-daemon:{role}",
    }
    if (provider := credentials_for(settings)) is not None:
        options["credential_provider"] = provider
    if settings.uses_tls:
        options["ssl_cert_reqs"] = settings.ssl_cert_reqs
        options["ssl_check_hostname"] = settings.ssl_cert_reqs == "required"
        if settings.ssl_ca_certs:
            options["ssl_ca_certs"] = settings.ssl_ca_certs
    return options


def build_pool(settings: RedisSettings, *, role: str = "main") -> redis.BlockingConnectionPool:
    """A blocking pool whose connections leave a node that answers it is the wrong one, and
    read a password kept in a file at every connection (`daemon.store.credentials`)."""
    options: dict[str, Any] = {**_options(settings, role=role), "timeout": REDIS_POOL_WAIT_S}
    options["connection_class"] = SSLConnection if settings.uses_tls else Connection
    if settings.url is not None:
        url = settings.url.reveal()
        if url.startswith("unix://"):
            del options["connection_class"]  # a socket file: no failover behind it
        if options.get("credential_provider") is not None:
            url = without_credentials(url)
        return ConnectionPool.from_url(url, **options)
    given = options.get("credential_provider") is None
    return ConnectionPool(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username if given else None,
        password=settings.password.reveal() if settings.password and given else None,
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


def build_client(settings: RedisSettings, *, role: str = "main") -> redis.Redis:
    """A client on a pool of its own: one blocking pool, or one per node of a Redis Cluster.
    `role="lease"` is the daemon's small, quick-failing client for its lease and heartbeat."""
    if not settings.cluster:
        return redis.Redis(connection_pool=build_pool(settings, role=role))
    options = {
        **_options(settings, role=role),
        "connection_pool_class": redis.BlockingConnectionPool,
    }
    given = options.get("credential_provider") is None
    if settings.url is not None:
        url = settings.url.reveal()
        cluster = RedisCluster.from_url(url if given else without_credentials(url), **options)
    else:
        cluster = RedisCluster(
            host=settings.host,
            port=settings.port,
            username=settings.username if given else None,
            password=settings.password.reveal() if settings.password and given else None,
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
    """GET of many keys in one round trip: one MGET on one server (a value that is not a string
    reads as None), GETs grouped per node on a cluster, where MGET must not span slots."""
    if not keys:
        return []
    if not is_cluster(client):
        return list(client.mget(keys))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return read_all(pipe) if keys else []


EXISTS_BATCH = 1_000


def count_existing(client: redis.Redis, keys: list[str]) -> int:
    """How many of `keys` exist: one EXISTS per thousand keys, in one round trip (split by slot
    on a cluster, which redis-py does)."""
    if is_cluster(client):
        return sum(
            int(client.exists(*keys[n : n + EXISTS_BATCH]))
            for n in range(0, len(keys), EXISTS_BATCH)
        )
    pipe = client.pipeline(transaction=False)
    for n in range(0, len(keys), EXISTS_BATCH):
        pipe.exists(*keys[n : n + EXISTS_BATCH])
    return sum(int(found) for found in pipe.execute()) if keys else 0


def read_all(pipe: redis.client.Pipeline) -> list[Any]:
    """Execute a pipeline of reads; a key of another type than asked (WRONGTYPE: someone's
    HSET on a token key) reads as None, never failing the other keys' reads."""
    commands: list[tuple[Any, ...]] = [  # (args, options) here; objects on a cluster
        c[0] if isinstance(c, tuple) else getattr(c, "args", ())
        for c in getattr(pipe, "command_stack", [])
    ]
    values = pipe.execute(raise_on_error=False)
    for args, value in zip(commands, values, strict=False):
        if isinstance(value, redis.ResponseError) and len(args) > 1:
            report_foreign(str(args[1]), str(value))
    return [None if isinstance(value, redis.ResponseError) else value for value in values]


def disconnect(client: redis.Redis | None) -> None:
    if client is None:
        return
    if is_cluster(client):
        client.close()
    else:
        client.connection_pool.disconnect()


def drop_idle(client: redis.Redis) -> None:
    """Disconnect the idle connections: the next ones connect (and authenticate) afresh."""
    if is_cluster(client):
        for node in cast(RedisCluster, client).get_nodes():  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            if node.redis_connection is not None:
                node.redis_connection.connection_pool.disconnect(inuse_connections=False)
        return
    client.connection_pool.disconnect(inuse_connections=False)


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
