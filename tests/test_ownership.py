"""Sharing logins over live instances, probe by probe, against a real Redis (no daemon)."""

from __future__ import annotations

import redis

from daemon.constants import LEGACY_LEADER_KEY, MEMBERSHIP_SETTLED_ROUNDS, PROTOCOL_VERSION
from daemon.refresh.assignment import assign
from daemon.service.ownership import Ownership, members_of
from daemon.sim.redis_server import RedisServer
from daemon.store.heartbeat import Heartbeat, logins_digest, write_heartbeat
from daemon.store.lease import holders

LOGINS = [f"EVAL_{n:02d}" for n in range(24)]


def beat(
    instance: str, started_at: str = "2026-11-26T06:00:00+00:00", **fields: object
) -> Heartbeat:
    values: dict[str, object] = {
        "pid": 1,
        "at": 0.0,
        "logins": len(LOGINS),
        "protocol": PROTOCOL_VERSION,
        "group": instance,  # an address each
        "renew_usable": 14,
        "keeps_alive": 15,
        "logins_digest": logins_digest(LOGINS),
        **fields,
    }
    return Heartbeat(instance, started_at=started_at, **values)  # type: ignore[arg-type]


def probe_apply(ownership: Ownership, me: Heartbeat) -> None:
    """What the daemon does with a plan when no refresh is running."""
    plan = ownership.round(me)
    ownership.leases.release(plan.to_release)


def test_a_lone_instance_owns_every_login_at_its_first_round(redis_server: RedisServer) -> None:
    ownership = Ownership(redis_server.client(), "a", LOGINS)
    plan = ownership.round(beat("a"))
    assert sorted(plan.taken) == LOGINS
    assert ownership.settled
    assert set(holders(redis_server.client(), LOGINS).values()) == {"a"}


def test_a_joining_instance_gets_its_share_once_membership_settles(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    a, b = Ownership(client, "a", LOGINS), Ownership(client, "b", LOGINS)
    probe_apply(a, beat("a"))
    for _ in range(MEMBERSHIP_SETTLED_ROUNDS - 1):
        probe_apply(b, beat("b", started_at="2026-11-26T06:05:00+00:00"))
        probe_apply(a, beat("a"))
        assert set(holders(client, LOGINS).values()) == {"a"}  # not settled yet: nothing moves
    for _ in range(2):  # a lets go of b's share, then b takes it
        probe_apply(a, beat("a"))
        probe_apply(b, beat("b", started_at="2026-11-26T06:05:00+00:00"))
    expected = assign(LOGINS, members_of([beat("a"), beat("b")]))
    assert holders(client, LOGINS) == expected
    assert 6 <= len(a.leases.held()) <= 18
    assert sorted(a.leases.held() + b.leases.held()) == LOGINS


def test_an_instance_meeting_an_earlier_one_of_another_protocol_stands_by(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    write_heartbeat(client, beat("old", protocol=PROTOCOL_VERSION + 1, owned=24))
    newer = Ownership(client, "new", LOGINS)
    plan = newer.round(beat("new", started_at="2026-11-26T06:05:00+00:00"))
    assert plan.taken == []
    assert newer.standby is not None
    assert "speaks protocol 3" in newer.standby
    # One that started before the other protocol's instance keeps sharing.
    earlier = Ownership(client, "early", LOGINS)
    earlier.round(beat("early", started_at="2026-11-26T05:00:00+00:00"))
    assert earlier.standby is None


def test_a_protocol_1_leader_makes_every_new_instance_stand_by(redis_server: RedisServer) -> None:
    client: redis.Redis = redis_server.client()
    client.set(LEGACY_LEADER_KEY, "host:1:aaaa:bbbbbbbb", px=5_000)
    ownership = Ownership(client, "new", LOGINS)
    ownership.leases.take(LOGINS[:2])
    plan = ownership.round(beat("new"))
    assert plan.taken == []
    assert plan.to_release == LOGINS[:2]
    assert ownership.standby == f"a protocol-1 daemon holds {LEGACY_LEADER_KEY}"


def test_instances_configured_with_other_logins_do_not_share_and_lose_no_login(
    redis_server: RedisServer,
) -> None:
    """A typo in one host's accounts file: it is left out of the assignment (and leaves the
    others out of its own), so no login is assigned to an instance that does not know it."""
    client = redis_server.client()
    a = Ownership(client, "a", LOGINS)
    typo = Ownership(client, "typo", [*LOGINS[:-1], "EVAL_TYPO"])
    typo_beat = beat("typo", logins_digest=logins_digest(typo.logins))
    probe_apply(a, beat("a"))
    for _ in range(MEMBERSHIP_SETTLED_ROUNDS + 1):
        probe_apply(typo, typo_beat)
        probe_apply(a, beat("a"))
    assert sorted(a.leases.held()) == LOGINS  # nothing handed to an instance that lacks one
    assert typo.leases.held() == ["EVAL_TYPO"]  # its own extra login, served
