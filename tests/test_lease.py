"""The refresh lease against a real Redis, restarted empty by the fixture."""

from __future__ import annotations

from daemon.constants import (
    LEADER_KEY,
    LEASE_DEADLINE_MARGIN_S,
    LEASE_FREE_PROBES_BEFORE_TAKEOVER,
    LEASE_TTL_S,
)
from daemon.sim.redis_server import RedisServer
from daemon.store.lease import Lease
from tests.helpers import FakeClock


def test_exactly_one_holder_named_in_redis(redis_server: RedisServer) -> None:
    client = redis_server.client()
    first, second = Lease(client, "host:1:aaaa"), Lease(client, "host:2:bbbb")
    assert first.hold() is True
    assert second.hold() is False
    assert client.get(LEADER_KEY) == first.fence
    assert first.fence is not None
    assert first.fence.startswith("host:1:aaaa:")
    assert 0 < client.pttl(LEADER_KEY) <= LEASE_TTL_S * 1000
    for _ in range(5):  # renewals keep it; the standby keeps waiting
        assert first.hold() is True
        assert second.hold() is False


def test_standby_takes_a_free_lease_only_after_several_probes(redis_server: RedisServer) -> None:
    client = redis_server.client()
    leader, standby = Lease(client, "a"), Lease(client, "b")
    assert leader.hold()
    assert not standby.hold()  # its first probe saw the lease held
    client.delete(LEADER_KEY)  # the leader died and the lease lapsed
    results = [standby.hold() for _ in range(LEASE_FREE_PROBES_BEFORE_TAKEOVER)]
    assert results == [False] * (LEASE_FREE_PROBES_BEFORE_TAKEOVER - 1) + [True]
    assert client.get(LEADER_KEY) == standby.fence


def test_leader_takes_the_lease_back_after_redis_restarts_empty(
    redis_server: RedisServer,
) -> None:
    leader, standby = Lease(redis_server.client(), "a"), Lease(redis_server.client(), "b")
    assert leader.hold()
    assert not standby.hold()
    redis_server.restart()
    assert not standby.hold()  # one free probe is not enough for a standby
    assert leader.hold()  # the leader's next probe re-takes it
    assert [standby.hold() for _ in range(5)] == [False] * 5


def test_a_lone_daemon_takes_a_free_lease_at_once(redis_server: RedisServer) -> None:
    assert Lease(redis_server.client(), "solo").hold() is True


def test_lost_lease_is_noticed(redis_server: RedisServer) -> None:
    client = redis_server.client()
    leader = Lease(client, "a")
    assert leader.hold()
    client.set(LEADER_KEY, "usurper", px=5_000)
    assert leader.hold() is False
    assert leader.held is False


def test_release_hands_over_and_only_its_own(redis_server: RedisServer) -> None:
    client = redis_server.client()
    leader = Lease(client, "a")
    assert leader.hold()
    leader.release()
    assert client.get(LEADER_KEY) is None
    client.set(LEADER_KEY, "other", px=5_000)
    leader.release()  # not held: never deletes another's lease
    assert client.get(LEADER_KEY) == "other"


def test_the_fence_is_new_at_every_holding(redis_server: RedisServer) -> None:
    client = redis_server.client()
    leader = Lease(client, "a")
    assert leader.hold()
    first = leader.fence
    redis_server.restart()  # empty: the next holding must not reuse the old value
    assert leader.hold()
    assert leader.fence not in (None, first)
    assert client.get(LEADER_KEY) == leader.fence


def test_the_holder_knows_its_own_deadline_without_asking_redis(
    redis_server: RedisServer,
) -> None:
    """A leader whose last renewal was sent LEASE_TTL_S - margin ago stops acting: paused or
    cut off, it gives up before a standby could take the lease."""
    clock = FakeClock(0.0)
    leader = Lease(redis_server.client(), "a", monotonic=clock)
    assert leader.hold()
    assert leader.is_current()
    clock.advance(LEASE_TTL_S - LEASE_DEADLINE_MARGIN_S - 0.1)
    assert leader.is_current()
    clock.advance(0.2)
    assert not leader.is_current()
    assert leader.held  # it has not been told: it just knows
    assert leader.hold()  # a renewal that lands restores it
    assert leader.is_current()
