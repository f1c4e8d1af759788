"""Fenced writes: only the lease's holder writes token keys, on a real Redis."""

from __future__ import annotations

import time

import pytest

from daemon.constants import LEADER_KEY
from daemon.sim.redis_server import RedisServer
from daemon.store.fence import LeaseLost, fenced_delete, fenced_set
from daemon.store.lease import Lease
from daemon.store.tokens import TokenSet, write_login_tokens


def test_the_holder_writes_and_a_former_holder_writes_nothing(redis_server: RedisServer) -> None:
    client = redis_server.client()
    old, new = Lease(client, "old"), Lease(client, "new")
    assert old.hold()
    stale_fence = old.fence
    fenced_set(client, stale_fence, [("token:A", "t1", 60)])
    assert client.get("token:A") == "t1"
    client.delete(LEADER_KEY)  # the old holder's lease lapsed while it was paused
    assert new.hold()
    fenced_set(client, new.fence, [("token:A", "t2", 60)])
    with pytest.raises(LeaseLost):
        fenced_set(client, stale_fence, [("token:A", "t-stale", 60), ("token:B", "x", 60)])
    with pytest.raises(LeaseLost):
        fenced_delete(client, stale_fence, ["token:A"])
    assert client.get("token:A") == "t2"
    assert client.get("token:B") is None  # all or nothing
    assert fenced_delete(client, new.fence, ["token:A", "token:missing"]) == 1


def test_a_login_is_written_only_under_the_lease(redis_server: RedisServer) -> None:
    client = redis_server.client()
    now = time.time()
    tokens = TokenSet("APEX_1", "opaque-1", now + 600, 600, "md-1", ("PA1",))
    with pytest.raises(LeaseLost):  # nobody holds the lease: a fenced write is refused
        write_login_tokens(client, tokens, now=now, max_ttl_s=18_000, fence="nobody:1")
    assert client.get("token:APEX_1") is None
    lease = Lease(client, "me")
    assert lease.hold()
    ttl = write_login_tokens(client, tokens, now=now, max_ttl_s=18_000, fence=lease.fence)
    assert client.get("token:PA1") == "opaque-1"
    assert client.get("mdtoken:PA1") == "md-1"
    assert 0 < client.ttl("token:APEX_1") <= ttl
