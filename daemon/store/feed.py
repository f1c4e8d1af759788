"""The market-data feed's state in Redis: its lease (`orca:feed:lease`, so that one instance of
the desk holds the socket) and its status (`orca:feed:status`, for `status` and `doctor`).

The lease's value is unique to each holding. The holder renews it every FEED_LEASE_RENEW_S and
counts its own deadline from the moment it sent its last successful renewal: once the TTL less a
margin has passed, it closes its socket without waiting for Redis to say so. A paused or cut-off
holder has therefore closed before another instance can take the lease, and the simulator (like
Tradovate) drops a socket that stops sending heartbeats; no moment sees two feed sockets."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis

from daemon.constants import (
    FEED_LEASE_KEY,
    FEED_LEASE_MARGIN_S,
    FEED_LEASE_TTL_S,
    FEED_STATUS_KEY,
    FEED_STATUS_TTL_S,
)
from daemon.values import json_object

# Renewed (1), or another holds it (0). Gone while the holder's own deadline has not passed
# (ARGV[3] = 1: Redis restarted empty, a FLUSHALL): nobody else can have held it since, so it is
# taken again with the same value and the socket stays up.
_RENEW = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if value or ARGV[3] ~= '1' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class FeedLease:
    def __init__(
        self,
        client: redis.Redis,
        instance: str,
        *,
        ttl_s: float = FEED_LEASE_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._instance = instance
        self._ttl_ms = int(ttl_s * 1000)
        self._monotonic = monotonic
        self._value: str | None = None
        self._valid_until = 0.0
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    @property
    def held(self) -> bool:
        """Held, and surely still: the deadline counted from the last renewal sent."""
        return self._value is not None and self._monotonic() < self._valid_until

    def take(self) -> bool:
        """The lease, if nobody holds it. RedisError propagates."""
        value = f"{self._instance}:{secrets.token_hex(8)}"
        sent_at = self._monotonic()
        if self._client.set(FEED_LEASE_KEY, value, nx=True, px=self._ttl_ms):
            self._value, self._valid_until = value, self._deadline(sent_at)
            return True
        return False

    def renew(self) -> bool:
        """Still ours (renewed, or taken again from an empty Redis), or lost to another. A Redis
        error leaves the deadline as it was: `held` turns false when it passes."""
        if self._value is None:
            return False
        sent_at = self._monotonic()
        try:
            in_time = "1" if self.held else "0"
            args: list[str | int] = [self._value, self._ttl_ms, in_time]
            renewed = bool(self._renew(keys=[FEED_LEASE_KEY], args=args))
        except redis.RedisError:
            return self.held
        if renewed:
            self._valid_until = self._deadline(sent_at)
        else:
            self._value = None
        return renewed

    def release(self) -> None:
        """Let go at once (best effort: else it lapses within its TTL)."""
        value, self._value = self._value, None
        if value is not None:
            try:
                self._release(keys=[FEED_LEASE_KEY], args=[value])
            except redis.RedisError:
                return

    def _deadline(self, sent_at: float) -> float:
        return sent_at + self._ttl_ms / 1000 - FEED_LEASE_MARGIN_S


def holder(client: redis.Redis) -> str | None:
    """The instance that holds the feed's lease, or None."""
    value = client.get(FEED_LEASE_KEY)
    return str(value).rsplit(":", 1)[0] if value else None


def write_status(client: redis.Redis, status: dict[str, Any]) -> None:
    client.set(FEED_STATUS_KEY, json.dumps(status), ex=FEED_STATUS_TTL_S)


def read_status(client: redis.Redis) -> dict[str, Any] | None:
    """The feed's status as its holder last wrote it (None: no feed has run for a while)."""
    return json_object(client.get(FEED_STATUS_KEY))
