"""Tradovate's per-address budgets, shared through Redis by every instance of one budget group.

Tradovate counts some endpoints per client address over a rolling hour and answers a penalty
ticket past the limit: `renewaccesstoken` 15 (every request), `accesstokenrequest` 5 (failed
requests only), keyed to the caller's /24 subnet. Instances cannot see their public address (NAT),
so ORCA_BUDGET_GROUP names the budget they share: one group per public /24. Spending lives in
Redis (a sorted set of spend times
per endpoint, checked and added in one Lua step), so neither a second instance nor a crash loop
under Restart=on-failure can overspend it; a penalty ticket blocks the endpoint for the whole
group, as Tradovate does.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from daemon.constants import BUDGET_KEY_PREFIX
from daemon.store.client import get_many, is_cluster, read_all, scan_batches
from daemon.values import json_object

RENEW = "renew"
LOGIN_FAILURE = "login_failure"

# Every key a script touches is the daemon's own: one of another type (another program's SET
# or HSET) is deleted, not an error that would fail every spend.
_OWN = """
local function own(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'none' and found ~= kind then redis.call('DEL', key) end
end
"""

# KEYS[1] spends, KEYS[2] block, KEYS[3] pending (taken, outcome not yet known).
# ARGV: now, window, usable, member, who_prefix, share, pending (1: hold it as pending),
# longest block (s): a block that is not a number is none; one that ends later than that from
# now (another program's SET) is rewritten to end then, so it runs out like any other; this
# instance's own block (0: none); then this instance's own spends in the window, member and time
# each: a cache that evicts keys with a TTL may have dropped them, and they are put back. A spend
# dated more than a minute ahead (no clock is that far off) would hold the window full: dropped.
# Returns {1, 0, ...} when taken, {0, wait_ms, ...} when not: the budget is full (wait until the
# oldest spend leaves the window, or a second while others' calls are still pending), the
# login's share is spent, or a penalty ticket blocks the endpoint (then nothing follows). What
# follows is when each spend in the window was made (a pending call's: now), this one's too:
# what a plan fits later calls around.
_SPEND = (
    _OWN
    + """
own(KEYS[1], 'zset') own(KEYS[2], 'string') own(KEYS[3], 'zset')
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local longest = tonumber(ARGV[8])
local blocked_until = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if blocked_until ~= blocked_until then blocked_until = 0 end
if blocked_until > now + longest then
  blocked_until = now + longest
  local ttl = math.ceil(longest + window)
  redis.call('SET', KEYS[2], string.format('%.3f', blocked_until), 'EX', ttl)
end
local own_block = tonumber(ARGV[9])
if own_block > blocked_until then
  blocked_until = own_block
  local ttl = math.ceil(own_block - now + window)
  redis.call('SET', KEYS[2], string.format('%.3f', own_block), 'EX', ttl)
end
if blocked_until > now then return {0, math.ceil((blocked_until - now) * 1000)} end
local restored = false
for i = 10, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], 'NX', tonumber(ARGV[i + 1]), ARGV[i]) == 1 then restored = true end
end
if restored then redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000)) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 60)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '(' .. (now + 60), '+inf')
redis.call('ZREMRANGEBYSCORE', KEYS[3], '(' .. (now + 60), '+inf')
local spends = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local pending = redis.call('ZRANGE', KEYS[3], 0, -1)
local mine, oldest_mine = 0, nil
for i = 1, #spends, 2 do
  if string.sub(spends[i], 1, #ARGV[5]) == ARGV[5] then
    mine = mine + 1
    if oldest_mine == nil then oldest_mine = tonumber(spends[i + 1]) end
  end
end
for i = 1, #pending do
  if string.sub(pending[i], 1, #ARGV[5]) == ARGV[5] then mine = mine + 1 end
end
local function answer(ok, wait_ms, taken)
  local found = {ok, wait_ms}
  for i = 2, #spends, 2 do found[#found + 1] = spends[i] end
  for i = 1, #pending + taken do found[#found + 1] = ARGV[1] end
  return found
end
if #spends / 2 + #pending >= tonumber(ARGV[3]) then
  if #pending > 0 or #spends == 0 then return answer(0, 1000, 0) end
  return answer(0, math.ceil((tonumber(spends[2]) + window - now) * 1000), 0)
end
if tonumber(ARGV[6]) > 0 and mine >= tonumber(ARGV[6]) then
  if oldest_mine == nil then return answer(0, 1000, 0) end
  return answer(0, math.ceil((oldest_mine + window - now) * 1000), 0)
end
if ARGV[7] == '1' then
  redis.call('ZADD', KEYS[3], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[3], 60000)
else
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
end
return answer(1, 0, 1)
"""
)
_SETTLE = (
    _OWN
    + """
own(KEYS[1], 'zset') own(KEYS[2], 'zset')
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 and ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[4]) * 1000))
end
return 1
"""
)

# KEYS[1] block; ARGV: until (epoch s), ttl (s). A block only ever grows: a 15 s ticket never
# shortens a 423's hour or a captcha's park.
_BLOCK = (
    _OWN
    + """
own(KEYS[1], 'string')
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1
"""
)


RESERVE = 1  # kept off each of Tradovate's limits: clocks of instances differ a little


def usable_of(limit: int) -> int:
    """What a group may spend of one of Tradovate's limits."""
    return max(1, limit - RESERVE)


@dataclass(frozen=True)
class Spend:
    ok: bool
    wait_s: float  # when not ok: until a slot frees (or the penalty ends)
    member: str  # names this spend, to refund it
    window: tuple[float, ...] | None = None  # when the window's spends were made (None: blocked)


class AddressBudget:
    """One group's rolling-window budgets. `limits` per endpoint are Tradovate's; a reserve is
    kept off each so that clock differences between instances never tip it over."""

    def __init__(
        self,
        client: redis.Redis,
        group: str,
        limits: dict[str, int],
        *,
        window_s: float,
        longest_block_s: Mapping[str, float] | None = None,
    ) -> None:
        """`longest_block_s` per endpoint: a block read from Redis (anyone's to write) is
        never trusted beyond it (3,600 s where not given)."""
        self._client = client
        self.longest_block_s = dict(longest_block_s or {})
        self.group = group
        self.limits = limits
        self.window_s = window_s
        # What this instance spent and was blocked from, kept in memory too: a cache that
        # evicts keys with a TTL (Azure's volatile-lru) must not give the group its budget back.
        self._own_spends: dict[str, dict[str, float]] = {}
        self._own_blocks: dict[str, float] = {}
        self._own_lock = threading.Lock()
        self._spend = client.register_script(_SPEND)
        self._settle = client.register_script(_SETTLE)
        self._block = client.register_script(_BLOCK)

    def load_scripts(self) -> None:
        """Load the scripts in one round trip before many threads call them at once: each would
        otherwise meet NOSCRIPT and load them again (a Cluster loads them on first use)."""
        if is_cluster(self._client):
            return
        pipe = self._client.pipeline(transaction=False)
        for script in (self._spend, self._settle, self._block):
            pipe.script_load(script.script)
        pipe.execute()

    def usable(self, endpoint: str) -> int:
        return usable_of(self.limits[endpoint])

    def _key(self, endpoint: str) -> str:
        # The group in braces: a spend set and its penalty block share a cluster slot, so the
        # script that reads both runs on Redis Cluster too.
        return f"{BUDGET_KEY_PREFIX}{{{self.group}}}:{endpoint}"

    def try_spend(
        self, endpoint: str, now: float, *, who: str, share: int = 0, pending: bool = False
    ) -> Spend:
        """Take a slot now, if the window has one (and `who` has not used its `share`). With
        `pending` the slot is held until `settle` says whether the call counted (failed
        logins count, successful ones do not), so concurrent calls never overshoot."""
        member = f"{who}|{now:.3f}|{secrets.token_hex(3)}"
        key = self._key(endpoint)
        own_block, own_spends = self._own(endpoint, now)
        ok, wait_ms, *window = self._spend(
            keys=[key, f"{key}:blocked", f"{key}:pending"],
            args=[
                repr(now),
                repr(self.window_s),
                self.usable(endpoint),
                member,
                f"{who}|",
                share,
                "1" if pending else "0",
                repr(self.longest_block_s.get(endpoint, 3_600.0)),
                repr(own_block),
                *(part for spent in own_spends.items() for part in (spent[0], repr(spent[1]))),
            ],
        )
        if ok and not pending:
            self._remember(endpoint, member, now)
        seen = tuple(sorted(float(at) for at in window)) if window or not wait_ms else None
        return Spend(bool(ok), max(0.0, float(wait_ms) / 1000), member, seen)

    def restore_own(self, now: float) -> None:
        """Put this instance's own spends and blocks back where an eviction dropped them (each
        membership round, so another instance's spend does not find the window emptier than it
        is for longer than a round). One round trip; none when there is nothing of its own."""
        pipe = self._client.pipeline(transaction=False)
        for endpoint in self.limits:
            block, spends = self._own(endpoint, now)
            key = self._key(endpoint)
            if spends:
                pipe.zadd(key, spends, nx=True)
                pipe.pexpire(key, math.ceil(self.window_s * 1000))
            if block:
                pipe.set(
                    f"{key}:blocked", f"{block:.3f}", ex=math.ceil(block - now + self.window_s)
                )
        if pipe.command_stack:
            read_all(pipe)

    def _own(self, endpoint: str, now: float) -> tuple[float, dict[str, float]]:
        """This instance's block (0: none) and its spends still in the window."""
        with self._own_lock:
            spends = self._own_spends.get(endpoint, {})
            current = {m: at for m, at in spends.items() if at > now - self.window_s}
            self._own_spends[endpoint] = current
            block = self._own_blocks.get(endpoint, 0.0)
            return (block if block > now else 0.0), dict(current)

    def _remember(self, endpoint: str, member: str, at: float) -> None:
        with self._own_lock:
            self._own_spends.setdefault(endpoint, {})[member] = at

    def settle(self, endpoint: str, spend: Spend, now: float, *, counted: bool) -> None:
        """A pending slot's outcome: counted in the window from `now`, or given back."""
        key = self._key(endpoint)
        if counted:
            self._remember(endpoint, spend.member, now)
        self._settle(
            keys=[key, f"{key}:pending"],
            args=[spend.member, repr(now), "1" if counted else "0", repr(self.window_s)],
        )

    def block(self, endpoint: str, seconds: float, now: float) -> None:
        """A penalty ticket (a 423, a captcha): nobody in the group calls this endpoint for
        `seconds`, or longer when a block already runs."""
        key = f"{self._key(endpoint)}:blocked"
        with self._own_lock:
            until = max(self._own_blocks.get(endpoint, 0.0), now + seconds)
            self._own_blocks[endpoint] = until
        self._block(keys=[key], args=[repr(now + seconds), math.ceil(seconds + self.window_s)])

    def used(self, endpoint: str, now: float) -> int:
        """Spends in the window: the group's as Redis holds them, never fewer than this
        instance's own."""
        found = int(self._client.zcount(self._key(endpoint), now - self.window_s, "+inf"))
        return max(found, len(self._own(endpoint, now)[1]))

    def publish_capacity(self, capacity: dict[str, object], ttl_s: int) -> None:
        """What this group needs and may spend, for `status` to say from Redis alone."""
        self._client.set(self._key("capacity"), json.dumps(capacity), ex=ttl_s)


def read_capacities(client: redis.Redis) -> list[dict[str, Any]]:
    """Every group's published capacity (one per /24 subnet)."""
    found = []
    for chunk in scan_batches(client, f"{BUDGET_KEY_PREFIX}*:capacity"):
        found += [v for v in map(json_object, get_many(client, chunk)) if v is not None]
    return sorted(found, key=lambda c: str(c.get("group")))
