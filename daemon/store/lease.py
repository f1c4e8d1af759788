"""Per-login leases: `orca:lease:{login}` names the one instance that refreshes that login.

Its value is a fencing value unique to this holding (instance id plus a random part, new at every
acquisition; compared for equality, so a Redis that comes back empty cannot hand an old value out
again). Every write of the login's keys is fenced with it (`daemon.store.fence`). The holder renews
all its leases in one round trip every membership round, well within their TTL, and keeps a deadline
of its own: from the moment it sent its last successful renewal it counts the TTL less a margin, and
once that has passed it stops logging in, renewing and writing that login without waiting for Redis
to say so. A paused or cut-off owner therefore gives up before the lease could pass on.

Which logins an instance should hold is decided elsewhere (`daemon.service.ownership`); this module
only takes, renews and lets go."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from daemon.constants import LEASE_DEADLINE_MARGIN_S, LEASE_KEY_PREFIX, LEASE_TTL_S
from daemon.store.client import is_cluster, pipeline, read_all

log = structlog.get_logger("daemon.lease")

# 1 renewed; 0 another instance holds it; -1 gone (Redis restarted empty or lost it).
_RENEW = """
local value = redis.call('GET', KEYS[1])
if value == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if value then return 0 end
return -1
"""
# The same for every lease held, in one script (one server): KEYS the leases, ARGV[1] the TTL,
# then each lease's fencing value. Sent by its digest, so a round costs one short command
# whatever the number of logins.
_RENEW_ALL = """
local found = {}
for i = 1, #KEYS do
  local value = redis.call('GET', KEYS[i])
  if value == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    found[i] = 1
  elseif value then found[i] = 0 else found[i] = -1 end
end
return found
"""
# A lease no live instance holds (see `daemon.service.lease_check`) is replaced by this holding,
# only while it still looks as it did when judged: the same first bytes and still no TTL, a TTL
# no lease of this protocol has, or (ARGV[3] = 1) a holder seen without a heartbeat for longer
# than a lease lives.
_TAKE_BACK = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
local head = redis.pcall('GETRANGE', KEYS[1], 0, 127)
if type(head) ~= 'string' then head = '' end
if head ~= ARGV[1] then return 0 end
if ttl == -1 or ttl > tonumber(ARGV[2]) or ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Fence:
    """A write of a login's keys lands only while `key` (its lease) holds `value`."""

    key: str
    value: str


@dataclass(frozen=True)
class Holding:
    """A lease this instance holds: the fence its writes carry, and until when (on the
    instance's monotonic clock) it is certainly still held."""

    fence: Fence
    valid_until: float

    def certain(self, monotonic_now: float) -> bool:
        return monotonic_now < self.valid_until


def lease_key(login: str) -> str:
    return f"{LEASE_KEY_PREFIX}{login}"


def holder_of(value: object) -> str | None:
    """The instance id in a lease's value (`{instance}:{random}`)."""
    return value.rsplit(":", 1)[0] if isinstance(value, str) and ":" in value else None


@dataclass(frozen=True)
class LeaseSeen:
    """A lease as Redis holds it: its first bytes ("" for none, or a value of another type)
    and its PTTL (-2 gone, -1 no TTL)."""

    head: str
    ttl_ms: int

    @property
    def holder(self) -> str | None:
        return holder_of(self.head) if self.ttl_ms != -2 else None


def seen(client: redis.Redis, logins: list[str]) -> dict[str, LeaseSeen]:
    """Each lease's first bytes and TTL, in one round trip (a forged value may be of any size
    or type: only its first bytes are read)."""
    if not logins:
        return {}
    pipe = pipeline(client, transaction=False)
    for login in logins:
        pipe.getrange(lease_key(login), 0, 127)
        pipe.pttl(lease_key(login))
    values = read_all(pipe)
    return {
        login: LeaseSeen(
            head if isinstance(head, str) else "",
            ttl if isinstance(ttl, int) else -2,
        )
        for login, head, ttl in zip(logins, values[::2], values[1::2], strict=True)
    }


def holders(client: redis.Redis, logins: list[str]) -> dict[str, str | None]:
    """Each login's owner now (None: nobody holds it), in one round trip."""
    if not logins:
        return {}
    pipe = pipeline(client, transaction=False)
    for login in logins:
        pipe.get(lease_key(login))
    return {login: holder_of(v) for login, v in zip(logins, read_all(pipe), strict=True)}


class LoginLeases:
    """The leases this instance holds, with a local deadline for each."""

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
        self._client = client
        self._monotonic = monotonic
        self._renew_all = client.register_script(_RENEW_ALL)
        self._packed: list[bytes] = []
        self._packed_for: tuple[object, ...] | None = None
        # Replaced entry by entry under the mutex, read without it: a refresh reads its
        # login's holding (may it act, the fence of its write) without a call.
        self.holdings: dict[str, Holding] = {}
        self._mutex = (
            threading.Lock()
        )  # the membership round, a one-off pass and a stop all touch it

    def held(self) -> list[str]:
        with self._mutex:
            return list(self.holdings)

    def is_current(self, login: str) -> bool:
        """Held, and certainly still held: no Redis answer needed, so an owner that was paused
        or cut off knows at once that it may no longer act for this login."""
        held = self.holdings.get(login)
        return held is not None and held.certain(self._monotonic())

    def fence(self, login: str) -> Fence | None:
        held = self.holdings.get(login)
        return None if held is None else held.fence

    def take(self, logins: Iterable[str]) -> list[str]:
        """SET NX each free lease, in one round trip; the logins taken."""
        wanted = [login for login in logins if login not in self.holdings]
        if not wanted:
            return []
        fences = {login: f"{self.instance}:{secrets.token_hex(4)}" for login in wanted}
        sent_at = self._monotonic()
        pipe = pipeline(self._client, transaction=False)
        for login, fence in fences.items():
            pipe.set(lease_key(login), fence, nx=True, px=int(self.ttl_s * 1000))
        taken = [login for login, ok in zip(wanted, read_all(pipe), strict=True) if ok is True]
        self._hold(taken, fences, sent_at)
        if taken:
            log.info("lease.acquired", instance=self.instance, logins=taken)
        return taken

    def take_back(self, forged: dict[str, tuple[LeaseSeen, bool]]) -> list[str]:
        """Replace leases judged foreign ({login: (as seen, its holder is no live instance)}),
        each only while it still looks as seen; the logins taken."""
        wanted = {n: v for n, v in forged.items() if n not in self.holdings}
        if not wanted:
            return []
        fences = {login: f"{self.instance}:{secrets.token_hex(4)}" for login in wanted}
        sent_at = self._monotonic()
        ttl_ms = int(self.ttl_s * 1000)
        results = self._each(
            _TAKE_BACK,
            [
                (lease_key(n), [lease.head, ttl_ms, int(orphan), fences[n]])
                for n, (lease, orphan) in wanted.items()
            ],
        )
        taken = [login for login, ok in zip(wanted, results, strict=True) if ok == 1]
        self._hold(taken, fences, sent_at)
        if taken:
            log.warning("lease.taken_back", instance=self.instance, logins=taken)
        return taken

    def _hold(self, taken: list[str], fences: dict[str, str], sent_at: float) -> None:
        """Leases just taken: held with the fence sent, until the TTL less a margin from when
        the command was sent."""
        with self._mutex:
            for login in taken:
                fence = Fence(lease_key(login), fences[login])
                self.holdings[login] = Holding(fence, self._valid_until(sent_at))

    def renew(self) -> list[str]:
        """Renew every lease held, in one round trip; a lease Redis lost (a restart, a FLUSHALL)
        is taken straight back, because this instance holds the token to restore. Returns the
        logins lost to another instance. RedisError propagates (nothing is dropped: the local
        deadlines run out on their own)."""
        with self._mutex:
            fences = {login: held.fence.value for login, held in self.holdings.items()}
        if not fences:
            return []
        sent_at = self._monotonic()
        ttl_ms = int(self.ttl_s * 1000)
        if is_cluster(self._client):  # a script cannot span slots: one per lease
            results = self._each(_RENEW, [(lease_key(n), [v, ttl_ms]) for n, v in fences.items()])
        else:
            results = self._renew_all_at_once(fences, ttl_ms)
        gone = [login for login, result in zip(fences, results, strict=True) if result == -1]
        lost = [
            login for login, result in zip(fences, results, strict=True) if result not in (1, -1)
        ]
        with self._mutex:
            for login, result in zip(fences, results, strict=True):
                held = self.holdings.get(login)
                if result == 1 and held is not None and held.fence.value == fences[login]:
                    self.holdings[login] = Holding(held.fence, self._valid_until(sent_at))
                elif result != 1:
                    self._forget(login)
        retaken = self.take(gone) if gone else []
        lost += [login for login in gone if login not in retaken]
        if lost:
            log.warning("lease.lost", instance=self.instance, logins=lost)
        return lost

    def _renew_all_at_once(self, fences: dict[str, str], ttl_ms: int) -> list[object]:
        """`_RENEW_ALL` by its digest. The command is packed once per set of holdings, not once
        a round: packing a thousand arguments was most of an idle round's cost."""
        pool = self._client.connection_pool
        connection: Any = pool.get_connection()  # redis-py leaves its methods untyped
        try:
            signature = (tuple(fences.items()), ttl_ms)
            if signature != self._packed_for:
                args = [lease_key(login) for login in fences] + [ttl_ms, *fences.values()]
                sha = self._renew_all.sha
                self._packed = connection.pack_command("EVALSHA", sha, len(fences), *args)
                self._packed_for = signature
            connection.send_packed_command(self._packed)
            try:
                return list(connection.read_response())
            except redis.exceptions.NoScriptError:  # a restarted Redis: loaded, sent again
                self._client.script_load(_RENEW_ALL)
                connection.send_packed_command(self._packed)
                return list(connection.read_response())
        except BaseException:
            connection.disconnect()
            raise
        finally:
            pool.release(connection)

    def release(self, logins: Iterable[str]) -> None:
        """Let go (a handover, a clean stop): only leases still this holding's; best effort."""
        with self._mutex:
            fences = {n: self.holdings[n].fence.value for n in logins if n in self.holdings}
            for login in fences:
                self._forget(login)
        if not fences:
            return
        try:
            self._each(_RELEASE, [(lease_key(n), [v]) for n, v in fences.items()])
        except redis.RedisError:
            return  # they lapse within the TTL
        log.info("lease.released", instance=self.instance, logins=list(fences))

    def _forget(self, login: str) -> None:
        self.holdings.pop(login, None)

    def _valid_until(self, sent_at: float) -> float:
        """A lease renewed by a command sent at `sent_at` is certainly held until its TTL less
        a margin has passed since."""
        return sent_at + self.ttl_s - LEASE_DEADLINE_MARGIN_S

    def _each(self, script: str, calls: list[tuple[str, list[str | int]]]) -> list[object]:
        """One single-key script per lease: pipelined on one server, one call each on a Cluster
        (its pipelines do not route scripts)."""
        if is_cluster(self._client):
            return [self._client.eval(script, 1, key, *args) for key, args in calls]
        pipe = pipeline(self._client, transaction=False)
        for key, args in calls:
            pipe.eval(script, 1, key, *args)
        return read_all(pipe)
