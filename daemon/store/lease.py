"""The refresh lease: any number of daemons may share one Redis, exactly one refreshes.

A redis-py Lock whose token is the instance id (so `GET orca:leader` names the leader), renewed
by the leader every probe, well within its TTL. A standby takes a free lease only after seeing it
free on several probes in a row: when Redis restarts empty the lease vanishes with everything
else, and the leader, which re-takes it on its very next probe, must win, because it holds the
tokens to restore; a standby would have to log in again.
"""

from __future__ import annotations

import redis
import structlog
from redis.exceptions import LockError
from redis.lock import Lock

from daemon.constants import LEADER_KEY, LEASE_FREE_PROBES_BEFORE_TAKEOVER, LEASE_TTL_S

log = structlog.get_logger("daemon.store.lease")


class Lease:
    def __init__(self, client: redis.Redis, instance: str) -> None:
        self.instance = instance
        self._client = client
        self._lock = Lock(client, LEADER_KEY, timeout=LEASE_TTL_S, thread_local=False)
        self.held = False
        self._free_probes = 0
        self._first_probe = True

    def hold(self) -> bool:
        """Renew the lease, or try for it. One call per probe; RedisError propagates."""
        first, self._first_probe = self._first_probe, False
        if self.held:
            try:
                self._lock.reacquire()
                return True
            except LockError:
                # Gone with a Redis restart (take it straight back) or taken by another.
                self.held = self._take()
                if not self.held:
                    log.warning("lease.lost", instance=self.instance, leader=self.leader())
                return self.held
        if self._client.exists(LEADER_KEY):
            self._free_probes = 0
            return False
        self._free_probes += 1
        # A process that just started has no tokens to lose to a restarted Redis: it may take a
        # free lease at once, so a lone daemon starts refreshing without waiting.
        if first or self._free_probes >= LEASE_FREE_PROBES_BEFORE_TAKEOVER:
            self.held = self._take()
        return self.held

    def _take(self) -> bool:
        taken = bool(self._lock.acquire(blocking=False, token=self.instance))
        if taken:
            log.info("lease.acquired", instance=self.instance)
        return taken

    def leader(self) -> str | None:
        value = self._client.get(LEADER_KEY)
        return value if isinstance(value, str) else None

    def release(self) -> None:
        """Let a standby take over at once (a clean stop); best effort."""
        if not self.held:
            return
        self.held = False
        try:
            self._lock.release()
        except (LockError, redis.RedisError):
            return
        log.info("lease.released", instance=self.instance)
