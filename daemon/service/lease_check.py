"""What the membership round trusts of what others wrote under `orca:*`: a lease, a member, the
legacy leader. Anyone with the Redis password can write these keys; each is believed only while
it behaves like what this protocol writes.

- A lease no live instance holds (no TTL, a TTL longer than any lease has, or a holder without a
  heartbeat for longer than a lease lives) is taken back by the login's assigned owner.
- A member whose heartbeat is live but who takes none of the free leases assigned to it
  (a forged heartbeat, an instance that cannot write) is left out of the assignment until it
  holds a lease, so logins are never given to an instance that does not refresh them.
- `orca:leader`, protocol 1's one lease, keeps this instance standing by only while it has the
  TTL protocol 1 gave it: a value without one is nobody's.
Each foreign value is said once, with its key and a fingerprint, never its content.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import redis
import structlog

from daemon.constants import (
    LEASE_TTL_S,
    LEGACY_LEADER_KEY,
    LEGACY_LEADER_TTL_S,
    MEMBER_IDLE_ROUNDS,
)
from daemon.logs import fingerprint
from daemon.store.lease import LeaseSeen, lease_key, seen

log = structlog.get_logger("daemon.ownership")

MEMBERS_WATCHED = 2  # other members whose leases a round looks at


class LeaseCheck:
    def __init__(self, client: redis.Redis, monotonic: Callable[[], float]) -> None:
        self._client = client
        self._monotonic = monotonic
        self._orphaned: dict[str, tuple[str, float]] = {}  # login: (head, first seen)
        self._said: set[tuple[str, str]] = set()
        self._idle_rounds: dict[str, int] = {}
        self.idle_members: set[str] = set()

    def legacy_leader(self) -> bool:
        """A protocol-1 daemon holds `orca:leader`: the key has the TTL such a lease has."""
        ttl_ms = int(self._client.pttl(LEGACY_LEADER_KEY))
        if ttl_ms == -2:
            self._said.discard(("cluster.legacy_leader_ignored", LEGACY_LEADER_KEY))
            return False
        if 0 < ttl_ms <= 2 * LEGACY_LEADER_TTL_S * 1000:
            return True
        self._say_once(
            "cluster.legacy_leader_ignored",
            LEGACY_LEADER_KEY,
            why="no TTL" if ttl_ms == -1 else f"a TTL of {ttl_ms // 1000} s",
            hint=f"a protocol-1 daemon renews it with a {LEGACY_LEADER_TTL_S} s TTL; "
            "this one is not a live lease: instances share the logins as if it were absent",
        )
        return False

    def foreign_leases(
        self, logins: list[str], live: set[str]
    ) -> dict[str, tuple[LeaseSeen, bool]]:
        """Of the leases of `logins` that could not be taken, those no live instance holds:
        {login: (as seen, taken back only as an orphan)}."""
        now = self._monotonic()
        found: dict[str, tuple[LeaseSeen, bool]] = {}
        for login, lease in seen(self._client, logins).items():
            if lease.ttl_ms == -2:
                continue
            if lease.ttl_ms == -1 or lease.ttl_ms > LEASE_TTL_S * 1000:
                why = "no TTL" if lease.ttl_ms == -1 else f"a TTL of {lease.ttl_ms // 1000} s"
                self._say_once("lease.foreign", lease_key(login), why=why, head=lease.head)
                found[login] = (lease, False)
                continue
            if lease.holder in live:
                self._orphaned.pop(login, None)
                continue
            head, since = self._orphaned.setdefault(login, (lease.head, now))
            if head != lease.head:
                self._orphaned[login] = (lease.head, now)
            elif now - since > LEASE_TTL_S + 1:
                why = "its holder has no heartbeat, and the lease is renewed"
                self._say_once("lease.foreign", lease_key(login), why=why, head=lease.head)
                found[login] = (lease, True)
        return found

    def watch_members(self, assignment: Mapping[str, str], me: str, turn: int) -> None:
        """Whether each other member takes the free leases assigned to it: MEMBERS_WATCHED
        members a round, one of their logins each (in turn), so a round costs the same however
        many members and logins share the Redis. A member whose looked-at leases stay free for
        about MEMBER_IDLE_ROUNDS rounds is idle."""
        assigned: dict[str, list[str]] = {}
        for login, owner in assignment.items():
            if owner != me:
                assigned.setdefault(owner, []).append(login)
        owners = sorted(assigned)
        if not owners:
            return
        watched = {
            owners[(turn * MEMBERS_WATCHED + n) % len(owners)] for n in range(MEMBERS_WATCHED)
        }
        # Each member is looked at every `every` rounds: idle after as many looks as fill
        # MEMBER_IDLE_ROUNDS, never fewer than 3.
        every = math.ceil(len(owners) / MEMBERS_WATCHED)
        looks = max(3, math.ceil(MEMBER_IDLE_ROUNDS / every)) if every > 1 else MEMBER_IDLE_ROUNDS
        looked = {owner: assigned[owner][turn % len(assigned[owner])] for owner in watched}
        leases = seen(self._client, list(looked.values()))
        for owner, login in looked.items():
            lease = leases[login]
            if lease.holder == owner:
                self.member_holds(owner)
                continue
            free = lease.ttl_ms == -2
            self._idle_rounds[owner] = self._idle_rounds.get(owner, 0) + 1 if free else 0
            if self._idle_rounds[owner] >= looks and owner not in self.idle_members:
                self.idle_members.add(owner)
                log.warning(
                    "cluster.member_idle",
                    member=owner,
                    rounds=self._idle_rounds[owner],
                    hint="its heartbeat is live but it takes none of the logins assigned to it "
                    "(a heartbeat another program wrote, or an instance that cannot write): "
                    "it is left out until it holds a lease",
                )

    def member_holds(self, instance: str) -> None:
        self._idle_rounds.pop(instance, None)
        if instance in self.idle_members:
            self.idle_members.discard(instance)
            log.info("cluster.member_back", member=instance)

    def forget_members(self, live: Iterable[str]) -> None:
        """Members whose heartbeat is gone are nothing to watch any more."""
        alive = set(live)
        self.idle_members &= alive
        self._idle_rounds = {m: n for m, n in self._idle_rounds.items() if m in alive}

    def _say_once(
        self, event: str, key: str, *, why: str, head: str | None = None, hint: str = ""
    ) -> None:
        if (event, key) in self._said:
            return
        self._said.add((event, key))
        fields = {"fingerprint": fingerprint(head)} if head is not None else {}
        log.warning(event, key=key, why=why, **fields, **({"hint": hint} if hint else {}))
