from __future__ import annotations

import threading

import fakeredis
import pytest

from daemon import cache
from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer


@pytest.fixture
def store() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def test_keys_follow_the_reference() -> None:
    assert cache.cache_key("accounts", "PAAPEX2666680000001") == "hft:accounts:PAAPEX2666680000001"
    assert (
        cache.cache_key("orders", "pending", "PAAPEX2666680000001", "D17158695")
        == "hft:orders:pending:PAAPEX2666680000001:D17158695"
    )
    with pytest.raises(ValueError, match="without ':' or"):
        cache.cache_key("orders:pending")


@pytest.mark.parametrize(
    ("endpoint", "ttl"), [("accounts", 300), ("positions", 1), ("orders", 1), ("balances", 2)]
)
def test_set_uses_spec_ttls(store: fakeredis.FakeRedis, endpoint: str, ttl: int) -> None:
    cache.set(endpoint, "PA1", "all", value={"count": 1}, client=store)
    assert store.ttl(f"hft:{endpoint}:PA1:all") == ttl
    assert cache.get(endpoint, "PA1", "all", client=store) == {"count": 1}


def test_unknown_endpoint_needs_a_ttl(store: fakeredis.FakeRedis) -> None:
    with pytest.raises(ValueError, match="no TTL known for endpoint 'fills'"):
        cache.set("fills", "PA1", value=[], client=store)
    cache.set("fills", "PA1", value=[], ttl_s=10, client=store)
    assert store.ttl("hft:fills:PA1") == 10
    with pytest.raises(ValueError, match="at least 1 second"):
        cache.set("fills", "PA1", value=[], ttl_s=0, client=store)


def test_a_value_that_is_not_json_is_a_miss(store: fakeredis.FakeRedis) -> None:
    store.set("hft:accounts:PA1", "{broken")
    assert cache.get("accounts", "PA1", client=store) is None


def test_get_or_fetch_calls_fetch_once_for_many_threads(store: fakeredis.FakeRedis) -> None:
    calls: list[int] = []
    release = threading.Event()
    start = threading.Barrier(20)

    def fetch() -> dict[str, int]:
        calls.append(1)
        release.wait(10)
        return {"count": 4}

    results: list[object] = []

    def reader() -> None:
        start.wait()
        results.append(cache.get_or_fetch("accounts", "PA1", fetch=fetch, client=store))

    threads = [threading.Thread(target=reader) for _ in range(20)]
    for thread in threads:
        thread.start()
    wait_for(lambda: calls, what="the one fetch to start")
    release.set()
    for thread in threads:
        thread.join(10)
    assert calls == [1]
    assert results == [{"count": 4}] * 20
    assert store.ttl("hft:accounts:PA1") == 300
    assert cache._flights == {}


def test_a_failed_fetch_raises_everywhere_and_caches_nothing(store: fakeredis.FakeRedis) -> None:
    def fetch() -> object:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError, match="broker down"):
        cache.get_or_fetch("accounts", "PA1", fetch=fetch, client=store)
    assert store.keys("*") == []
    assert cache.get_or_fetch("accounts", "PA1", fetch=lambda: [1], client=store) == [1]
    assert cache.get_or_fetch("accounts", "PA1", fetch=lambda: [2], client=store) == [1]


def test_stats_and_clear_on_a_real_redis(redis_server: RedisServer) -> None:
    client = redis_server.client()
    for n in range(2_500):
        client.set(f"hft:accounts:PA{n}", "{}", ex=300)
    for n in range(30):
        client.set(f"hft:orders:pending:PA{n}", "{}", ex=60)
    client.set("hft:fills:PA1", "{}", ex=60)
    client.set("token:APEX_1", "x", ex=60)
    assert cache.stats(client=client) == {
        "accounts": 2_500,
        "positions": 0,
        "orders": 30,
        "balances": 0,
        "fills": 1,
        "total": 2_531,
    }
    assert cache.clear("orders", client=client) == 30
    assert cache.stats(client=client)["orders"] == 0
    assert cache.clear(client=client) == 2_501
    assert client.keys("*") == ["token:APEX_1"]  # nothing but the cache was touched


def test_stats_never_uses_keys(redis_server: RedisServer) -> None:
    client = redis_server.client()
    client.config_resetstat()
    client.set("hft:accounts:PA1", "{}")
    cache.stats(client=client)
    cache.clear(client=client)
    commands = client.info("commandstats")
    assert "cmdstat_keys" not in commands
    assert "cmdstat_scan" in commands
    assert "cmdstat_unlink" in commands
