"""Fenced writes: a login's keys are written only by the instance that holds that login's lease
at that moment (`daemon.store.lease`). On one Redis server a Lua script compares the lease with
the writer's fencing value and writes (or deletes) every key in the same step. On Redis Cluster
a script cannot span slots, so the lease is read just before the slot-grouped write: an owner
that lost the lease within that one round trip could still land one write
(docs/deploy.md#redis-cluster).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import redis
from redis.cluster import RedisCluster

from daemon.store.client import pipeline
from daemon.store.lease import Fence

# KEYS[1] the lease; KEYS[2..] the keys. ARGV[1] the fence; then a value and a TTL per key.
_FENCED_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 2], 'EX', ARGV[2 * i - 1])
end
return 1
"""
_FENCED_DELETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', unpack(KEYS, 2)) + 1
"""


class LeaseLost(Exception):
    """This instance no longer holds the login's lease: it must not write. Nothing was written."""


def fenced_set(
    client: redis.Redis, fence: Fence | None, items: Sequence[tuple[str, str, int]]
) -> None:
    """SET key value EX ttl for every item, all or none; with a fence, only while the lease
    holds the fence's value (else LeaseLost). Without one (tools, tests) a plain MULTI/EXEC."""
    if fence is not None and not isinstance(client, RedisCluster):
        keys = [fence.key, *(key for key, _, _ in items)]
        args: list[str | int] = [fence.value]
        for _, value, ttl in items:
            args += [value, ttl]
        if not client.eval(_FENCED_SET, len(keys), *keys, *args):
            raise LeaseLost(f"{fence.key} is held by another instance")
        return
    _check_lease(client, fence)
    pipe = pipeline(client, transaction=True)
    for key, value, ttl in items:
        pipe.set(key, value, ex=ttl)
    pipe.execute()


def fenced_delete(client: redis.Redis, fence: Fence | None, keys: Sequence[str]) -> int:
    """DEL the keys while the lease holds the fence's value (else LeaseLost); how many existed."""
    if not keys:
        return 0
    if fence is not None and not isinstance(client, RedisCluster):
        deleted = client.eval(_FENCED_DELETE, len(keys) + 1, fence.key, *keys, fence.value)
        if not deleted:
            raise LeaseLost(f"{fence.key} is held by another instance")
        return cast(int, deleted) - 1
    _check_lease(client, fence)
    return int(client.delete(*keys))


def _check_lease(client: redis.Redis, fence: Fence | None) -> None:
    if fence is not None and client.get(fence.key) != fence.value:
        raise LeaseLost(f"{fence.key} is held by another instance")
