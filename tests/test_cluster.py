"""REDIS_CLUSTER=true against a real 3-node Redis Cluster started by a fixture."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from daemon import cache, price
from daemon.config import load_redis_settings
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate
from daemon.store.client import get_redis_client, is_cluster
from daemon.store.status import LoginStatus
from daemon.store.tokens import TokenSet, get_token, iter_tokens, write_login_tokens
from tests.helpers import DaemonProcess, Run, daemon_env, make_jwt


def cluster_url(nodes: list[RedisServer]) -> str:
    return f"redis://127.0.0.1:{nodes[0].port}/0"


def test_the_shared_client_is_a_cluster_client(redis_cluster: list[RedisServer]) -> None:
    client = get_redis_client(
        load_redis_settings({"REDIS_URL": cluster_url(redis_cluster), "REDIS_CLUSTER": "true"})
    )
    assert is_cluster(client)
    assert isinstance(client, RedisCluster)
    assert client.ping() is True


def test_a_login_is_written_across_slots_in_one_call(redis_cluster: list[RedisServer]) -> None:
    client = get_redis_client(
        load_redis_settings({"REDIS_URL": cluster_url(redis_cluster), "REDIS_CLUSTER": "true"})
    )
    now = time.time()
    accounts = tuple(f"PAAPEX2666680000{n:03d}" for n in range(1, 30))
    tokens = TokenSet(
        "APEX_266668", make_jwt(now + 5_400), now + 5_400, 5_400, make_jwt(now + 5_400), accounts
    )
    write_login_tokens(client, tokens, now=now, max_ttl_s=18_000, status=LoginStatus("APEX_266668"))
    assert all(node.client().dbsize() > 0 for node in redis_cluster)  # spread over every node
    assert all(get_token(name, client=client) == tokens.access_token for name in tokens.names)
    assert len(list(iter_tokens(client=client))) == 30  # SCAN reached every node


def test_cache_stats_and_clear_scan_every_node(redis_cluster: list[RedisServer]) -> None:
    client = get_redis_client(
        load_redis_settings({"REDIS_URL": cluster_url(redis_cluster), "REDIS_CLUSTER": "true"})
    )
    for n in range(300):
        cache.set("accounts", f"PA{n}", value={"n": n}, client=client)
    assert sum(n.client().dbsize() for n in redis_cluster) == 300
    assert min(n.client().dbsize() for n in redis_cluster) > 0
    assert cache.stats(client=client)["accounts"] == 300
    assert cache.clear("accounts", client=client) == 300
    assert cache.stats(client=client)["total"] == 0
    price.store_many({f"SYM{n}": {"Last": n} for n in range(50)}, client=client)
    assert price.latest("SYM7", client=client) == {
        "Last": 7,
        "Timestamp": pytest.approx(
            json.loads(json.dumps(price.latest("SYM7", client=client)))["Timestamp"]
        ),
    }


def test_the_daemon_and_check_run_on_a_cluster(
    redis_cluster: list[RedisServer],
    served_tradovate: FakeTradovate,
    tmp_path: Path,
    cli: object,
) -> None:
    env = daemon_env(served_tradovate, cluster_url(redis_cluster), REDIS_CLUSTER="true")
    daemon = DaemonProcess(env, cwd=str(tmp_path))
    try:
        daemon.event("logins.taken")
        client = RedisCluster(host="127.0.0.1", port=redis_cluster[0].port, decode_responses=True)
        from daemon.sim.environment import wait_for

        wait_for(lambda: len(list(client.scan_iter("token:*"))) == 17, what="17 token keys")
        run: Run = cli(env)  # type: ignore[operator]
        code, out, _ = run("check", "--json")
        report = json.loads(out)
        assert code == 0
        assert len(report["tokens"]) == 17
        assert {row["state"] for row in report["tokens"]} == {"valid"}
        assert report["total_keys"] == sum(n.client().dbsize() for n in redis_cluster)
        code, out, _ = run("tokens", "list", "--json")
        assert len(json.loads(out)) == 17
        client.flushall()  # the reconcile pass restores what every node lost
        wait_for(lambda: len(list(client.scan_iter("token:*"))) == 17, what="restored keys")
    finally:
        daemon.stop()
    assert set(served_tradovate.seen.sessions_opened.values()) == {1}


def test_cluster_with_a_database_other_than_0_is_a_configuration_error() -> None:
    from daemon.config import ConfigError

    with pytest.raises(ConfigError, match="REDIS_DB: Redis Cluster has only database 0"):
        load_redis_settings({"REDIS_CLUSTER": "true", "REDIS_DB": "2"})


def test_info_reports_every_primary(redis_cluster: list[RedisServer], cli: object) -> None:
    run: Run = cli({"REDIS_URL": cluster_url(redis_cluster), "REDIS_CLUSTER": "true"})  # type: ignore[operator]
    code, out, _ = run("info", "--json")
    assert code == 0
    nodes = json.loads(out)["nodes"]
    assert sorted(nodes) == sorted(f"127.0.0.1:{n.port}" for n in redis_cluster)
    assert all(info["redis_version"].startswith("7.") for info in nodes.values())
