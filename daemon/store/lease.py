"""The refresh lease: any number of daemons may share one Redis, exactly one refreshes.

A redis-py Lock on `orca:leader` whose value is a fencing value unique to this holding (instance
id plus a random part, new at every acquisition; compared for equality, so a Redis that comes
back empty cannot hand an old value out again). Every token write is fenced with it
(`daemon.store.fence`). The holder renews it every probe, well within its TTL, and keeps its own
deadline: from the moment it sent its last successful renewal, it counts the TTL less a margin,
and once that has passed it stops logging in, renewing and writing without waiting for Redis to
say so. A paused or cut-off leader therefore gives up before the lease could pass to another.

A standby takes a free lease only after seeing it free on several probes in a row: when Redis
restarts empty the lease vanishes with everything else, and the leader, which re-takes it on its
very next probe, must win, because it holds the tokens to restore.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

import redis
import structlog
from redis.exceptions import LockError
from redis.lock import Lock

from daemon.constants import (
    LEADER_KEY,
    LEASE_DEADLINE_MARGIN_S,
    LEASE_FREE_PROBES_BEFORE_TAKEOVER,
    LEASE_TTL_S,
)

log = structlog.get_logger("daemon.lease")


class Lease:
    def __init__(
        self,
        client: redis.Redis,
        instance: str,
        *,
        ttl_s: float = LEASE_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instance = instance
        self.ttl_s = ttl_s
        self.held = False
        self.fence: str | None = None  # the value of orca:leader while this instance holds it
        self._client = client
        self._lock = Lock(client, LEADER_KEY, timeout=ttl_s, thread_local=False)
        self._monotonic = monotonic
        self._valid_until = 0.0
        self._free_probes = 0
        self._first_probe = True
        self._mutex = threading.Lock()  # the probe and a stop may both let go

    def is_current(self) -> bool:
        """Held, and certainly still held: no Redis answer needed, so a leader that was paused
        or cut off knows at once that it may no longer act."""
        return self.held and self._monotonic() < self._valid_until

    def hold(self) -> bool:
        """Renew the lease, or try for it. One call per probe; RedisError propagates."""
        with self._mutex:
            first, self._first_probe = self._first_probe, False
            sent_at = self._monotonic()
            if self.held:
                try:
                    self._lock.reacquire()
                except LockError:
                    # Gone with a Redis restart (take it straight back) or taken by another.
                    self.held = self._take(sent_at)
                    if not self.held:
                        self.fence = None
                        log.warning("lease.lost", instance=self.instance, leader=self.leader())
                    return self.held
                self._valid_until = sent_at + self.ttl_s - LEASE_DEADLINE_MARGIN_S
                return True
            if self._client.exists(LEADER_KEY):
                self._free_probes = 0
                return False
            self._free_probes += 1
            # A process that just started has no tokens to lose to a restarted Redis: it may
            # take a free lease at once, so a lone daemon starts refreshing without waiting.
            if first or self._free_probes >= LEASE_FREE_PROBES_BEFORE_TAKEOVER:
                self.held = self._take(sent_at)
            return self.held

    def _take(self, sent_at: float) -> bool:
        fence = f"{self.instance}:{secrets.token_hex(4)}"
        if not self._lock.acquire(blocking=False, token=fence):
            return False
        self.fence = fence
        self._valid_until = sent_at + self.ttl_s - LEASE_DEADLINE_MARGIN_S
        log.info("lease.acquired", instance=self.instance, fence=fence)
        return True

    def leader(self) -> str | None:
        value = self._client.get(LEADER_KEY)
        return value if isinstance(value, str) else None

    def release(self) -> None:
        """Let a standby take over at once (a clean stop); best effort."""
        with self._mutex:
            if not self.held:
                return
            self.held, self.fence, self._valid_until = False, None, 0.0
            try:
                self._lock.release()
            except (LockError, redis.RedisError):
                return
        log.info("lease.released", instance=self.instance)
