"""Sharing the logins among the live instances: each round, which leases to take and let go.

Every instance writes its heartbeat, renews the leases it holds, reads the live heartbeats and
computes the same assignment (`daemon.refresh.assignment`). Logins move only once the membership
has looked the same for MEMBERSHIP_SETTLED_ROUNDS rounds in a row: an instance whose heartbeat
blinked (Redis restarted empty, a slow round) does not shuffle every login, and an instance that
just started alone takes everything at once. A login changes hands through its lease: the old
owner lets go when no refresh of it is running, the new one takes the free lease and adopts the
token from Redis; a killed owner's leases lapse on their own (LEASE_TTL_S), its heartbeat soon
after (HEARTBEAT_TTL_S).

Only instances configured with the same logins share them: one whose list differs (a typo in
one host's accounts file, a rollout half done) is left out of the others' assignment and leaves
them out of its own, so no login is assigned to an instance that does not know it; each serves
its own list and the leases keep one owner per login (`cluster.logins_differ`, said once).

Instances speak a protocol (PROTOCOL_VERSION in heartbeats). One that meets a live instance of
another protocol that started before it stands by and takes nothing: during a rolling upgrade
the instances already running keep every login, and no login is ever refreshed under two rules.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import redis
import structlog

from daemon.constants import LEGACY_LEADER_KEY, MEMBERSHIP_SETTLED_ROUNDS, PROTOCOL_VERSION
from daemon.refresh.assignment import Member, assign
from daemon.service.lease_check import LeaseCheck
from daemon.store.heartbeat import Heartbeat, live_instances, write_heartbeat
from daemon.store.lease import LoginLeases

log = structlog.get_logger("daemon.ownership")


@dataclass(frozen=True)
class Plan:
    """What a membership round found: leases taken (adopt, then refresh), lost to another
    instance (stop at once), and assigned elsewhere (let go once no refresh of it is running)."""

    taken: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    to_release: list[str] = field(default_factory=list)


def members_of(beats: Sequence[Heartbeat]) -> list[Member]:
    """The instances logins are shared over, each with its share of its group's budget."""
    per_group = Counter(beat.group for beat in beats)
    return [
        Member(
            beat.instance,
            weight=beat.renew_usable / per_group[beat.group],
            capacity=beat.keeps_alive // per_group[beat.group],
        )
        for beat in beats
    ]


def standby_reason(me: Heartbeat, beats: Sequence[Heartbeat], legacy_leader: bool) -> str | None:
    """Why this instance must not take logins now, or None."""
    if legacy_leader:
        return f"a protocol-1 daemon holds {LEGACY_LEADER_KEY}"
    for beat in beats:
        earlier = (beat.started_at or "", beat.instance) < (me.started_at or "", me.instance)
        if beat.protocol != me.protocol and earlier:
            return f"{beat.instance} speaks protocol {beat.protocol}, this one {me.protocol}"
    return None


class Ownership:
    def __init__(
        self,
        client: redis.Redis,
        instance: str,
        logins: Sequence[str],
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.instance = instance
        self.logins = list(logins)
        self.leases = LoginLeases(client, instance, monotonic=monotonic)
        self.standby: str | None = None  # why it stands by
        self.settled = False  # it has decided once which logins are its own
        self.unheld: int | None = None  # logins nobody refreshes (None: not yet known)
        self.group_logins = 0  # assigned to the instances of its budget group (0: not yet known)
        self._check = LeaseCheck(client, monotonic)
        self._client = client
        self._view: tuple[tuple[str, float, int], ...] | None = None
        self._assigned_view: tuple[tuple[str, float, int], ...] | None = None
        self._assignment: dict[str, str] = {}
        self._rounds = 0
        self._settled_rounds = 0
        self._first_round = True
        self._differing_said: set[str] = set()

    def round(self, me: Heartbeat) -> Plan:
        """One membership round: heartbeat, renewals and what to take or let go. RedisError
        propagates."""
        write_heartbeat(self._client, me)
        lost = self.leases.renew()
        beats = live_instances(self._client)
        live = {b.instance for b in beats} | {me.instance}
        self._check.forget_members(live)
        legacy = self._check.legacy_leader()
        first, self._first_round = self._first_round, False
        reason = standby_reason(me, beats, legacy)
        if reason != self.standby:
            if reason:
                log.warning("cluster.protocol_mismatch", instance=self.instance, reason=reason)
            else:
                log.info("cluster.sharing", instance=self.instance, protocol=PROTOCOL_VERSION)
            self.standby = reason
        if reason:
            self._view, self._settled_rounds, self.unheld = None, 0, None
            return Plan(lost=lost, to_release=self.leases.held())
        sharing = [
            b
            for b in beats
            if b.protocol == me.protocol
            and not b.standby
            and b.instance not in self._check.idle_members
        ]
        differing = {b.instance for b in sharing if b.logins_digest != me.logins_digest}
        if differing - self._differing_said:
            log.warning(
                "cluster.logins_differ",
                instance=self.instance,
                others=sorted(differing),
                hint="every instance sharing a Redis needs the same logins: compare their "
                "ORCA_ACCOUNTS_FILE / ORCA_ACCOUNTS; until then they do not share",
            )
        self._differing_said = differing
        sharing = [b for b in sharing if b.instance not in differing]
        if me.instance not in {b.instance for b in sharing}:
            sharing.append(me)  # its own heartbeat was just written; a read may miss it
        members = members_of(sharing)
        view = tuple(sorted((m.instance, m.weight, m.capacity) for m in members))
        if view != self._view:
            self._view, self._settled_rounds = view, 0
        self._settled_rounds += 1
        alone = len(members) == 1
        if self._settled_rounds < MEMBERSHIP_SETTLED_ROUNDS and not (first and alone):
            return Plan(lost=lost)
        self.settled = True
        if view != self._assigned_view:  # the same members give the same answer: kept
            self._assignment, self._assigned_view = assign(self.logins, members), view
        assignment = self._assignment
        group = {b.instance for b in sharing if b.group == me.group}
        self.group_logins = sum(1 for owner in assignment.values() if owner in group)
        mine = {login for login, owner in assignment.items() if owner == me.instance}
        held = set(self.leases.held())
        wanted = sorted(mine - held)
        taken = self.leases.take(wanted)
        blocked = [login for login in wanted if login not in taken]
        if blocked:
            taken += self.leases.take_back(self._check.foreign_leases(blocked, live))
        holding = (held & mine) | set(taken)
        self._rounds += 1
        if len(holding) < len(self.logins):
            self._check.watch_members(assignment, me.instance, self._rounds)
        # Held by a live instance: what each says in its heartbeat (read this round anyway),
        # so no lease of another instance is read to count them.
        others_hold = sum(b.owned for b in beats if b.instance != me.instance)
        self.unheld = max(0, len(self.logins) - len(holding) - others_hold)
        return Plan(taken=sorted(taken), lost=lost, to_release=sorted(held - mine))
