"""Every operator verb through its entry point, against a real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon import price
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate
from tests.helpers import DaemonProcess, Run, daemon_env, seed


@pytest.fixture
def run(cli: Callable[[dict[str, str]], Run], redis_server: RedisServer) -> Run:
    return cli({"REDIS_URL": redis_server.url, "ORCA_ACCOUNTS": "APEX_1,APEX_2"})


def test_check_lists_tokens_cache_prices_and_missing_logins(
    run: Run, redis_server: RedisServer
) -> None:
    tokens = seed(redis_server)
    code, out, _ = run("check")
    assert code == 1  # APEX_2 is configured and has no token
    assert "Redis Connection: ✅ Connected (redis://127.0.0.1:" in out
    assert "token:APEX_1 " in out
    assert "| ✅ valid" in out
    assert "token:PA2 " in out
    assert "token:APEX_2                     | TTL: -" in out
    assert "❌ missing" in out
    assert "hft:accounts:PA1 | TTL: 300s" in out
    assert "price:MNQZ5:latest | TTL: 5s" in out
    assert "Total keys in Redis (every kind): 9" in out
    assert tokens["APEX_1"] not in out
    code, out, _ = run("check", "--json")
    report = json.loads(out)
    assert {row["name"]: row["state"] for row in report["tokens"]} == {
        "APEX_1": "valid",
        "PA1": "valid",
        "PA2": "valid",
        "APEX_2": "missing",
    }
    assert report["hft"]["count"] == 1
    assert report["total_keys"] == 9


def test_check_says_when_redis_is_unreachable(
    cli: Callable[[dict[str, str]], Run],
) -> None:
    from daemon.sim.redis_server import free_port

    run = cli(
        {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_SOCKET_CONNECT_TIMEOUT": "0.2"}
    )
    code, out, _ = run("check")
    assert code == 1
    assert out.startswith("Redis Connection: ❌ Failed (redis://127.0.0.1:")


def test_tokens_verbs(run: Run, redis_server: RedisServer) -> None:
    tokens = seed(redis_server)
    code, out, _ = run("tokens", "get", "PA1")
    assert (code, out) == (0, tokens["APEX_1"] + "\n")
    code, _, err = run("tokens", "get", "NOPE")
    assert code == 1
    assert err == "orca-tokens: no token for NOPE\n"
    code, out, _ = run("tokens", "ttl", "APEX_1", "--json")
    assert code == 0
    assert 5_000 < json.loads(out)["ttl_s"] <= 5_340
    assert run("tokens", "ttl", "NOPE")[0] == 1
    code, out, _ = run("tokens", "list")
    assert code == 0
    assert "token:APEX_1" in out
    assert "Total tokens: 3" in out
    assert tokens["APEX_1"] not in out
    code, out, _ = run("tokens", "list", "--json")
    assert sorted(t["name"] for t in json.loads(out)) == ["APEX_1", "PA1", "PA2"]
    code, out, _ = run("tokens", "delete", "PA2")
    assert code == 0
    assert "deleted token:PA2" in out
    assert run("tokens", "delete", "PA2")[0] == 1


def test_cache_and_price_verbs(run: Run, redis_server: RedisServer) -> None:
    seed(redis_server)
    code, out, _ = run("cache", "stats", "--json")
    assert json.loads(out) == {
        "accounts": 1,
        "positions": 0,
        "orders": 0,
        "balances": 0,
        "total": 1,
    }
    code, out, _ = run("cache", "clear", "accounts")
    assert out == "removed 1 key from hft:accounts\n"
    code, out, _ = run("price", "get", "MNQZ5")
    assert out == "MNQZ5: $21000.25 | Bid: $21000.00 | Ask: $21000.50\n"
    assert json.loads(run("price", "get", "MNQZ5", "--json")[1])["Last"] == 21000.25
    code, _, err = run("price", "get", "NOPE")
    assert code == 1
    assert "no price for NOPE" in err


def test_price_stream_prints_updates(run: Run, redis_server: RedisServer) -> None:
    price.store(
        "MESZ5", {"Last": 1.0, "Bid": 1.0, "Ask": 1.0, "Timestamp": 1}, client=redis_server.client()
    )
    code, out, _ = run("price", "stream", "MESZ5", "--count", "1")
    assert (code, out) == (0, "MESZ5: $1.00 | Bid: $1.00 | Ask: $1.00\n")


def test_info(run: Run) -> None:
    code, out, _ = run("info", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["redis_version"].startswith("7.")
    assert info["connected_clients"] >= 1
    assert "Used Memory:" in run("info")[1]


def test_health_from_redis_when_the_endpoint_is_disabled(
    cli: Callable[[dict[str, str]], Run], redis_server: RedisServer
) -> None:
    seed(redis_server)
    ready = cli({"REDIS_URL": redis_server.url, "ORCA_ACCOUNTS": "APEX_1", "ORCA_HEALTH_ADDR": ""})
    code, out, _ = ready("health")
    assert (code, out) == (
        0,
        "ready: 1 of 1 logins have a valid token; no daemon is running "
        "(no live heartbeat in Redis)\n",
    )
    not_ready = cli({"ORCA_ACCOUNTS": "APEX_1,APEX_2"})
    assert not_ready("health")[0] == 1


def test_health_asks_the_running_daemon(
    cli: Callable[[dict[str, str]], Run],
    redis_server: RedisServer,
    served_tradovate: FakeTradovate,
    tmp_path: Path,
) -> None:
    from daemon.sim.redis_server import free_port

    port = free_port()
    env = daemon_env(served_tradovate, redis_server.url, ORCA_HEALTH_ADDR=f"127.0.0.1:{port}")
    daemon = DaemonProcess(env, cwd=str(tmp_path))
    try:
        daemon.event("token.refreshed")
        run = cli({"REDIS_URL": redis_server.url, "ORCA_HEALTH_ADDR": f"127.0.0.1:{port}"})
        from daemon.sim.environment import wait_for

        wait_for(lambda: run("health")[0] == 0, what="health 0")
        assert json.loads(run("health", "--json")[1])["ready"] is True
    finally:
        daemon.stop()
    code, out, _ = run("health")
    assert code == 1
    assert "not ready" in out


def test_accounts_against_tradovate(
    cli: Callable[[dict[str, str]], Run],
    redis_server: RedisServer,
    served_tradovate: FakeTradovate,
    tmp_path: Path,
) -> None:
    env = daemon_env(served_tradovate, redis_server.url)
    code = DaemonProcess(env, "run", "--once", cwd=str(tmp_path)).wait()
    assert code == 0
    redis_server.client().delete("token:APEX_265995")
    run = cli({**env, "ORCA_ACCOUNTS": "APEX_266668,APEX_265995"})
    code, out, _ = run("accounts")
    assert code == 1  # one login had no token: a row says so, the others are listed
    assert "APEX_266668 (token " in out
    assert "  → PAAPEX2666680000004 (id 100104, active)" in out
    assert "APEX_265995: ❌ missing token in Redis" in out
    rows = json.loads(run("accounts", "--json")[1])
    assert [len(r["accounts"]) for r in rows] == [4, 0]


def test_tokens_refresh_through_the_running_daemon(
    cli: Callable[[dict[str, str]], Run],
    redis_server: RedisServer,
    served_tradovate: FakeTradovate,
    tmp_path: Path,
) -> None:
    env = daemon_env(served_tradovate, redis_server.url)
    daemon = DaemonProcess(env, cwd=str(tmp_path))
    try:
        daemon.event("logins.taken")
        daemon.event("token.refreshed")
        run = cli(
            {"REDIS_URL": redis_server.url, "ORCA_ACCOUNTS": ",".join(served_tradovate.users)}
        )
        code, out, _ = run("tokens", "refresh", "APEX_266668")
        assert code == 0
        assert "asked the running daemon" in out
        assert "✅ APEX_266668: renew" in out
        assert served_tradovate.seen.renewals["APEX_266668"] == 1
        code, _, err = run("tokens", "refresh", "APEX_999")
        assert code == 1
        assert "APEX_999 is not a configured login" in err
    finally:
        daemon.stop()
    assert set(served_tradovate.seen.sessions_opened.values()) == {1}


def test_tokens_refresh_directly_when_no_daemon_runs(
    cli: Callable[[dict[str, str]], Run], redis_server: RedisServer, served_tradovate: FakeTradovate
) -> None:
    run = cli(daemon_env(served_tradovate, redis_server.url))
    code, out, _ = run("tokens", "refresh")
    assert code == 0
    assert "no daemon is running: refreshing here" in out
    assert out.count("✅") == 4
    assert redis_server.client().get("token:PAAPEX2659950000001") is not None


def test_redis_errors_are_one_clear_line(cli: Callable[[dict[str, str]], Run]) -> None:
    from daemon.sim.redis_server import free_port

    run = cli(
        {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_SOCKET_CONNECT_TIMEOUT": "0.2"}
    )
    code, _out, err = run("tokens", "list")
    assert code == 1
    assert err.startswith("orca-tokens: Redis at redis://127.0.0.1:")
    assert "Traceback" not in err


def test_usage_errors_exit_2(cli: Callable[[dict[str, str]], Run]) -> None:
    run = cli({})
    assert run("tokens")[0] == 2
    assert run("tokens", "get")[0] == 2
    assert run("price", "stream")[0] == 2
    assert run("cache", "drop")[0] == 2


def test_sync_without_a_dsn_is_a_configuration_error(run: Run) -> None:
    code, _, err = run("sync")
    assert code == 78
    assert "ORCA_AUDIT_DSN: is not set" in err


def test_bare_orca_tokens_prints_help_with_variables_and_exit_codes(
    cli: Callable[[dict[str, str]], Run],
) -> None:
    code, out, _ = cli({})()
    assert code == 0
    assert "status" in out
    assert "doctor" in out
    assert "REDIS_PASSWORD" in out
    assert "ORCA_TOKEN_PROBE_INTERVAL" in out
    assert "78" in out
    assert cli({})("--help")[1] == out
