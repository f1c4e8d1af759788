"""Fenced writes: only a login's lease holder writes its keys, on a real Redis."""

from __future__ import annotations

import time

import pytest

from daemon.sim.redis_server import RedisServer
from daemon.store.fence import LeaseLost, fenced_delete, fenced_set
from daemon.store.lease import Fence, LoginLeases, lease_key
from daemon.store.tokens import TokenSet, write_login_tokens


def test_the_holder_writes_and_a_former_holder_writes_nothing(redis_server: RedisServer) -> None:
    client = redis_server.client()
    old, new = LoginLeases(client, "old"), LoginLeases(client, "new")
    assert old.take(["A"]) == ["A"]
    stale_fence = old.fence("A")
    fenced_set(client, stale_fence, [("token:A", "t1", 60)])
    assert client.get("token:A") == "t1"
    client.delete(lease_key("A"))  # the old holder's lease lapsed while it was paused
    assert new.take(["A"]) == ["A"]
    fenced_set(client, new.fence("A"), [("token:A", "t2", 60)])
    with pytest.raises(LeaseLost):
        fenced_set(client, stale_fence, [("token:A", "t-stale", 60), ("token:B", "x", 60)])
    with pytest.raises(LeaseLost):
        fenced_delete(client, stale_fence, ["token:A"])
    assert client.get("token:A") == "t2"
    assert client.get("token:B") is None  # all or nothing
    assert fenced_delete(client, new.fence("A"), ["token:A", "token:missing"]) == 1


def test_a_login_is_written_only_under_its_own_lease(redis_server: RedisServer) -> None:
    client = redis_server.client()
    now = time.time()
    tokens = TokenSet("APEX_1", "opaque-1", now + 600, 600, "md-1", ("PA1",))
    with pytest.raises(LeaseLost):  # nobody holds the lease: a fenced write is refused
        write_login_tokens(
            client, tokens, now=now, max_ttl_s=18_000, fence=Fence(lease_key("APEX_1"), "x:1")
        )
    assert client.get("token:APEX_1") is None
    leases = LoginLeases(client, "me")
    leases.take(["APEX_2"])
    other = leases.fence("APEX_2")
    assert other is not None
    with pytest.raises(LeaseLost):  # another login's lease is no licence
        write_login_tokens(
            client, tokens, now=now, max_ttl_s=18_000, fence=Fence(lease_key("APEX_1"), other.value)
        )
    leases.take(["APEX_1"])
    ttl = write_login_tokens(
        client, tokens, now=now, max_ttl_s=18_000, fence=leases.fence("APEX_1")
    )
    assert client.get("token:PA1") == "opaque-1"
    assert client.get("mdtoken:PA1") == "md-1"
    assert 0 < client.ttl("token:APEX_1") <= ttl
