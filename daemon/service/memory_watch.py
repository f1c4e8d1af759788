"""The server's memory, watched: its eviction policy said at start and whenever it changes
(`redis.eviction_policy`, a warning when it may evict the daemon's keys), and the keys it has
evicted exported as `orca_redis_evicted_keys`."""

from __future__ import annotations

import redis
import structlog

from daemon.service.components import Components
from daemon.store.eviction import EVICTION_ADVICE, evicts_ours, policy_words, read_memory

log = structlog.get_logger("daemon.redis")

MEMORY_WATCH_INTERVAL_S = 15.0
_UNSAID = object()


class MemoryWatch:
    def __init__(self, components: Components) -> None:
        self._c = components
        self._policy_said: object = _UNSAID
        self._refused = False

    def check(self) -> None:
        if self._refused:
            return
        c = self._c
        try:
            memory = read_memory(c.redis)
        except redis.exceptions.NoPermissionError:
            self._refused = True  # an ACL user without INFO: said once, not asked again
            log.warning("redis.info_refused", hint="allow INFO to see the eviction policy")
            return
        except redis.RedisError as error:
            c.redis_health.failed(error)
            return
        c.metrics.redis_evicted_keys.set(memory.evicted_keys)
        if memory.policy == self._policy_said:
            return
        self._policy_said = memory.policy
        if evicts_ours(memory.policy):
            log.warning(
                "redis.eviction_policy",
                policy=memory.policy,
                said=policy_words(memory.policy),
                hint=EVICTION_ADVICE,
            )
        else:
            log.info("redis.eviction_policy", policy=memory.policy)
