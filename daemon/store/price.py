"""Latest prices: `price:{symbol}:latest` (JSON, 5 s) and, with every store, a PUBLISH of the same
JSON on channel `price:{symbol}`.

    from daemon import price
    price.store("MNQZ5", {"Last": 21000.25, "Bid": 21000.0, "Ask": 21000.5, ...})
    for update in price.stream("MNQZ5"):
        ...
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, cast

import hiredis
import orjson
import redis
import structlog
from redis.backoff import EqualJitterBackoff
from redis.cluster import RedisCluster

from daemon.constants import PRICE_KEY_PREFIX, PRICE_TTL_S
from daemon.store.client import get_redis_client, is_cluster
from daemon.store.connections import WRONG_NODE_ERRORS
from daemon.values import json_object

log = structlog.get_logger("daemon.store.price")

_SYMBOL = re.compile(r"[^:*\s]+\Z")
MAX_UNREAD_ANSWERS = 64  # a Publisher reads its answers before more wait: a short pause each time
STREAM_POLL_S = 1.0  # with no pushed update for this long, read the latest key instead
_reconnect_backoff = EqualJitterBackoff(cap=5.0, base=0.1)


def latest_key(symbol: str) -> str:
    return f"{PRICE_KEY_PREFIX}{symbol}:latest"


def channel(symbol: str) -> str:
    return f"{PRICE_KEY_PREFIX}{symbol}"


@functools.lru_cache(maxsize=4_096)
def _names(symbol: str) -> tuple[str, str]:
    """The symbol's key and channel, the symbol checked once."""
    if not _SYMBOL.match(symbol):
        raise ValueError(f"symbol {symbol!r} must be non-empty without ':', '*' or spaces")
    return latest_key(symbol), channel(symbol)


def _payload(data: Mapping[str, Any]) -> bytes:
    if "Timestamp" not in data:
        data = {**data, "Timestamp": int(time.time() * 1000)}
    return orjson.dumps(data)


def store(symbol: str, data: Mapping[str, Any], *, client: redis.Redis | None = None) -> None:
    """SET price:{symbol}:latest EX 5 and PUBLISH price:{symbol}, in one round trip."""
    store_many({symbol: data}, client=client)


def store_many(
    prices: Mapping[str, Mapping[str, Any]],
    *,
    client: redis.Redis | None = None,
    also_publish: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Many symbols' prices in one pipelined round trip (two on a Redis Cluster);
    `also_publish`: more messages (channel: JSON value) in the same round trip, after them."""
    client = client or get_redis_client()
    sets, messages = _commands(prices, also_publish)
    pipe = client.pipeline(transaction=False)
    # A cluster pipeline refuses PUBLISH; a classic PUBLISH on any one node reaches subscribers
    # on every node, so the cluster's messages go through one node's own pipeline.
    publishing = pipe
    if is_cluster(client):
        node = cast(RedisCluster, client).get_default_node()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        publishing = (node.redis_connection or client).pipeline(transaction=False)
    for command in sets:
        pipe.execute_command(*command)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    for command in messages:
        publishing.execute_command(*command)  # type: ignore[no-untyped-call]  # as above
    pipe.execute()
    if publishing is not pipe:
        publishing.execute()


def _commands(
    prices: Mapping[str, Mapping[str, Any]],
    also_publish: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A store's SETs, then its PUBLISHes: a subscriber told of a price reads it in the key.
    SET key value EX ttl as SPEC writes it, without redis-py's generic set() argument handling,
    which cost a sixth of the time of a 10,000-symbol store."""
    sets: list[tuple[Any, ...]] = []
    messages: list[tuple[Any, ...]] = []
    payloads: dict[int, bytes] = {}  # one price under two names (a root's) is encoded once
    for symbol, data in prices.items():
        key, name = _names(symbol)
        payload = payloads.get(id(data))
        if payload is None:
            payload = payloads[id(data)] = _payload(data)
        sets.append(("SET", key, payload, "EX", PRICE_TTL_S))
        messages.append(("PUBLISH", name, payload))
    if also_publish:
        messages += [("PUBLISH", name, orjson.dumps(data)) for name, data in also_publish.items()]
    return sets, messages


class Publisher:
    """Stores one after another at a feed's rate, on a connection of their own made as the
    shared pool makes its connections (address, TLS, credentials), so a busy feed never holds
    a slot the token writes wait for. A store is sent without waiting for its answers; they are
    read by `settle()` (the feed settles once a second, and a store settles first once
    MAX_UNREAD_ANSWERS wait), so a refused write is still raised, late. At 1,000 quotes a
    second, waiting for each answer cost as much CPU as the rest of the feed. On a Redis
    Cluster each store is `store_many`."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._connection: Any = None
        if not is_cluster(client):
            pool = client.connection_pool
            self._connection = pool.connection_class(**pool.connection_kwargs)
        self._unread = 0

    def store_many(
        self,
        prices: Mapping[str, Mapping[str, Any]],
        *,
        also_publish: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """As `store_many`; a failure of the connection raises here, a refusal at `settle`."""
        if self._connection is None:
            store_many(prices, client=self._client, also_publish=also_publish)
            return
        sets, messages = _commands(prices, also_publish)
        commands = sets + messages
        if self._unread + len(commands) > MAX_UNREAD_ANSWERS:
            self.settle()
        # hiredis packs in C what redis-py's pack_commands packs through Python layers that
        # cost more than the send itself, at a feed's rate.
        packed = b"".join(map(hiredis.pack_command, commands))
        try:
            # The health check (a PING after an idle spell) reads its own answer: only when
            # no other answer waits before it.
            self._connection.send_packed_command([packed], check_health=not self._unread)
        except (redis.ConnectionError, redis.TimeoutError):
            self._drop()
            raise
        self._unread += len(commands)

    def settle(self) -> None:
        """Reads every answer waiting; raises the first refusal among them (READONLY after a
        failover, a NOPERM), or the connection's failure."""
        refusals: list[redis.ResponseError] = []
        try:
            while self._unread:
                self._unread -= 1
                try:
                    self._connection.read_response()
                except redis.ResponseError as error:
                    refusals.append(error)
        except (redis.ConnectionError, redis.TimeoutError):
            self._drop()
            raise
        if any(isinstance(refusal, WRONG_NODE_ERRORS) for refusal in refusals):
            self._drop()  # the next store connects afresh, to whichever node is primary now
        if refusals:
            raise refusals[0]

    @property
    def unread(self) -> int:
        """Answers sent for and not read yet."""
        return self._unread

    def close(self) -> None:
        if self._connection is not None:
            self._drop()

    def _drop(self) -> None:
        self._unread = 0
        self._connection.disconnect()


def latest(symbol: str, *, client: redis.Redis | None = None) -> dict[str, Any] | None:
    return json_object((client or get_redis_client()).get(latest_key(symbol)))


def stream(
    symbol: str,
    *,
    client: redis.Redis | None = None,
    stop: threading.Event | None = None,
    poll_s: float = STREAM_POLL_S,
) -> Iterator[dict[str, Any]]:
    """Yield each new price of `symbol` as it is published.

    When nothing is pushed for `poll_s` (keep it below the client's socket timeout), the latest
    key is read instead: a writer that only SETs still reaches the reader. A lost connection (a
    Redis restart) is re-established with backoff and the subscription renewed. Only ever moves
    forward: an update no newer than the last one yielded (by Timestamp) is skipped, so a poll
    that raced ahead of pushed updates never brings back older prices. Ends when `stop` is set.
    """
    client = client or get_redis_client()
    stop = stop or threading.Event()
    last_seen: object = None
    failures = 0
    while not stop.is_set():
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(channel(symbol))
            if failures:
                log.info("price.stream_resumed", symbol=symbol)
            failures = 0
            while not stop.is_set():
                message = pubsub.get_message(timeout=poll_s)
                update = json_object(message["data"]) if message else latest(symbol, client=client)
                if update is not None and _newer(update.get("Timestamp"), last_seen):
                    last_seen = update.get("Timestamp")
                    yield update
        except redis.RedisError as error:
            failures += 1
            if failures == 1:
                log.warning("price.stream_interrupted", symbol=symbol, error=str(error))
            stop.wait(_reconnect_backoff.compute(failures))
        finally:
            pubsub.close()


def _newer(timestamp: object, last: object) -> bool:
    numbers = (int, float)
    if isinstance(timestamp, numbers) and isinstance(last, numbers):
        return timestamp > last
    return timestamp != last
