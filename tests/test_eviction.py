"""A cache that evicts keys with a TTL (Azure's default `volatile-lru`) may drop any key the daemon
writes, the budgets' spends and blocks included. Each instance keeps its own spends and blocks in
memory too, so an eviction never hands the group back a budget it spent, nor ends a lockout."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from daemon.sim.tradovate import LOGIN_PATH
from daemon.store.budget import LOGIN_FAILURE, RENEW, AddressBudget
from tests.helpers import World, two_login_world

HOUR_S = 3_600.0
NOW = 1_800_000_000.0


def evict_budgets(client: fakeredis.FakeRedis) -> int:
    keys = list(client.scan_iter("orca:budget:*"))
    return int(client.delete(*keys)) if keys else 0


def budget(client: fakeredis.FakeRedis) -> AddressBudget:
    return AddressBudget(client, "g", {RENEW: 15, LOGIN_FAILURE: 5}, window_s=HOUR_S)


def test_evicted_spends_never_give_the_group_its_renewals_back() -> None:
    """Two instances spend the group's 14 renewals, 7 each; every budget key is evicted; the
    window is still full, for both, until their own spends leave it."""
    client = fakeredis.FakeRedis(decode_responses=True)
    one, two = budget(client), budget(client)
    for n in range(7):
        assert one.try_spend(RENEW, NOW + n, who=f"a{n}").ok
        assert two.try_spend(RENEW, NOW + n, who=f"b{n}").ok
    assert not one.try_spend(RENEW, NOW + 10, who="a").ok
    assert evict_budgets(client) >= 1
    for instance in (one, two):  # each membership round puts its own back
        instance.restore_own(NOW + 11)
    assert not two.try_spend(RENEW, NOW + 12, who="b").ok
    assert not one.try_spend(RENEW, NOW + 12, who="a").ok
    assert one.used(RENEW, NOW + 12) == 14
    evict_budgets(client)  # before the next round, each instance's own spends still count
    assert one.used(RENEW, NOW + 13) == two.used(RENEW, NOW + 13) == 7
    assert one.try_spend(RENEW, NOW + HOUR_S + 1, who="a").ok  # the window moved on


def test_an_evicted_lockout_block_still_holds_this_instances_logins() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    group = budget(client)
    group.block(LOGIN_FAILURE, HOUR_S, NOW)
    assert evict_budgets(client) == 1
    spend = group.try_spend(LOGIN_FAILURE, NOW + 60, who="APEX_2", pending=True)
    assert not spend.ok
    assert spend.wait_s == pytest.approx(HOUR_S - 60)
    assert client.exists(f"orca:budget:{{g}}:{LOGIN_FAILURE}:blocked")  # written back for all


@pytest.fixture
def world() -> Iterator[World]:
    with two_login_world() as built:
        yield built


def test_a_lockout_block_evicted_during_a_423_sends_no_login(world: World) -> None:
    world.refresher.refresh("APEX_2")
    world.fake.inject(LOGIN_PATH, "http_423")
    assert world.refresher.refresh("APEX_1").outcome == "lockout"
    assert evict_budgets(world.redis) >= 1  # the block, and the failed login's spend
    world.fake.close_sessions("APEX_2")
    world.refresher.states["APEX_2"].grant = None  # its session is gone: it must log in
    sent = len(world.fake.seen.login_bodies)
    assert world.refresher.refresh("APEX_2").outcome == "deferred"
    assert len(world.fake.seen.login_bodies) == sent  # nothing sent during the lockout
    world.clock.advance(HOUR_S + 1)
    assert world.refresher.refresh("APEX_2").outcome == "login"


def test_a_spend_tells_when_the_windows_spends_were_made_for_the_plan_to_fit_around() -> None:
    """Whoever spent them: another instance's two, then this one's; blocked: nothing known."""
    client = fakeredis.FakeRedis(decode_responses=True)
    one, two = budget(client), budget(client)
    assert two.try_spend(RENEW, NOW, who="b0").window == (NOW,)
    assert two.try_spend(RENEW, NOW + 1.5, who="b1").ok
    pending = two.try_spend(LOGIN_FAILURE, NOW + 2, who="b2", pending=True)
    assert pending.window == (NOW + 2,)  # a call still pending counts from now
    mine = one.try_spend(RENEW, NOW + 3, who="a0")
    assert mine.ok
    assert mine.window == (NOW, NOW + 1.5, NOW + 3)
    assert one.try_spend(RENEW, NOW + HOUR_S + 2, who="a1").window == (NOW + 3, NOW + HOUR_S + 2)
    one.block(RENEW, 60, NOW + HOUR_S + 3)
    blocked = one.try_spend(RENEW, NOW + HOUR_S + 4, who="a2")
    assert not blocked.ok
    assert blocked.window is None
