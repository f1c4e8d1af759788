"""Per-login leases against a real Redis, restarted empty by the fixture."""

from __future__ import annotations

from daemon.constants import LEASE_DEADLINE_MARGIN_S, LEASE_TTL_S
from daemon.sim.redis_server import RedisServer
from daemon.store.lease import LoginLeases, holders, lease_key
from tests.helpers import FakeClock

LOGINS = [f"APEX_{n}" for n in range(6)]


def test_each_login_has_exactly_one_holder_named_in_redis(redis_server: RedisServer) -> None:
    client = redis_server.client()
    first, second = LoginLeases(client, "host:1:aaaa"), LoginLeases(client, "host:2:bbbb")
    assert first.take(LOGINS[:4]) == LOGINS[:4]
    assert second.take(LOGINS) == LOGINS[4:]  # the free ones only
    assert holders(client, LOGINS) == {
        **dict.fromkeys(LOGINS[:4], "host:1:aaaa"),
        **dict.fromkeys(LOGINS[4:], "host:2:bbbb"),
    }
    fence = first.fence(LOGINS[0])
    assert fence is not None
    assert fence.key == lease_key(LOGINS[0]) == "orca:lease:APEX_0"
    assert client.get(fence.key) == fence.value
    assert fence.value.startswith("host:1:aaaa:")
    assert 0 < client.pttl(fence.key) <= LEASE_TTL_S * 1000
    for _ in range(3):  # renewals keep them all, in one round trip each
        assert first.renew() == []
        assert second.renew() == []
    assert sorted(first.held()) == LOGINS[:4]


def test_a_lease_taken_by_another_is_noticed_as_lost(redis_server: RedisServer) -> None:
    client = redis_server.client()
    owner = LoginLeases(client, "a")
    owner.take(LOGINS[:2])
    client.set(lease_key(LOGINS[0]), "usurper:1", px=5_000)
    assert owner.renew() == [LOGINS[0]]
    assert owner.held() == [LOGINS[1]]
    assert owner.fence(LOGINS[0]) is None
    assert not owner.is_current(LOGINS[0])


def test_the_owner_takes_its_leases_back_after_redis_restarts_empty(
    own_redis_server: RedisServer,
) -> None:
    """It holds the tokens to restore: the next renewal re-takes every lease, with new fences
    (an old value is never handed out again)."""
    owner = LoginLeases(own_redis_server.client(), "a")
    owner.take(LOGINS)
    before = {login: owner.fence(login) for login in LOGINS}
    own_redis_server.restart()
    assert owner.renew() == []
    assert sorted(owner.held()) == LOGINS
    client = own_redis_server.client()
    for login in LOGINS:
        fence = owner.fence(login)
        assert fence is not None
        assert fence != before[login]
        assert client.get(fence.key) == fence.value


def test_release_hands_over_and_only_its_own(redis_server: RedisServer) -> None:
    client = redis_server.client()
    owner, other = LoginLeases(client, "a"), LoginLeases(client, "b")
    owner.take(LOGINS[:2])
    owner.release([LOGINS[0]])
    assert client.get(lease_key(LOGINS[0])) is None
    assert other.take([LOGINS[0]]) == [LOGINS[0]]
    owner.release([LOGINS[0]])  # no longer its: never deletes another's lease
    assert holders(client, [LOGINS[0]]) == {LOGINS[0]: "b"}
    client.set(lease_key(LOGINS[1]), "usurper:1", px=5_000)
    owner.release([LOGINS[1]])  # held here, but another value in Redis: left alone
    assert client.get(lease_key(LOGINS[1])) == "usurper:1"


def test_the_owner_knows_each_deadline_without_asking_redis(redis_server: RedisServer) -> None:
    """An owner whose last renewal was sent LEASE_TTL_S - margin ago stops acting for that
    login: paused or cut off, it gives up before another instance could take the lease."""
    clock = FakeClock(0.0)
    owner = LoginLeases(redis_server.client(), "a", monotonic=clock)
    owner.take(LOGINS[:1])
    assert owner.is_current(LOGINS[0])
    clock.advance(LEASE_TTL_S - LEASE_DEADLINE_MARGIN_S - 0.1)
    assert owner.is_current(LOGINS[0])
    clock.advance(0.2)
    assert not owner.is_current(LOGINS[0])
    assert owner.held() == [LOGINS[0]]  # it has not been told: it just knows
    assert owner.renew() == []  # a renewal that lands restores it
    assert owner.is_current(LOGINS[0])
    assert not owner.is_current("APEX_never_taken")
