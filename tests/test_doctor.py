"""`orca-tokens doctor`: names a typo, a TLS mismatch and a loose credential file, says where
each setting came from with secrets masked, never logs in, never writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import LOGIN_PATH, FakeTradovate
from tests.helpers import Run, daemon_env


def doctor(cli: Callable[[dict[str, str]], Run], env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    code, out, _ = cli(env)("doctor", "--json")
    report: dict[str, Any] = json.loads(out)
    return code, report


def test_a_sound_configuration_passes_without_logging_in_or_writing(
    cli: Callable[[dict[str, str]], Run],
    served_tradovate: FakeTradovate,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text("ORCA_TOKEN_TTL=9000\n")
    env = daemon_env(served_tradovate, redis_server.url)
    keys_before = redis_server.client().dbsize()
    code, report = doctor(cli, env)
    assert code == 0, report["findings"]
    rows = {row["name"]: row for row in report["settings"]}
    assert rows["ORCA_TOKEN_TTL"] == {"name": "ORCA_TOKEN_TTL", "value": "9000", "source": ".env"}
    assert rows["ORCA_LOG_LEVEL"]["source"] == "default"
    assert rows["TRADOVATE_SEC"]["value"] == "******** (set)"
    assert rows["REDIS_URL"]["value"] == "******** (set)"
    text = json.dumps(report)
    assert served_tradovate.sec not in text
    assert all(u.password not in text for u in served_tradovate.users.values())
    topics = {(f["level"], f["topic"]) for f in report["findings"]}
    assert {("ok", "redis"), ("ok", "tradovate")} <= topics
    assert not any(path == LOGIN_PATH for _, path in served_tradovate.seen.arrivals)
    assert redis_server.client().dbsize() == keys_before


def test_a_typo_a_tls_mismatch_and_a_loose_password_file_are_named(
    cli: Callable[[dict[str, str]], Run],
    served_tradovate: FakeTradovate,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    secret = tmp_path / "sec"
    secret.write_text(served_tradovate.sec)
    secret.chmod(0o644)
    env = daemon_env(served_tradovate)
    del env["TRADOVATE_SEC"]
    env.update(
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(redis_server.port),
        REDIS_SSL="true",  # a plain port
        REDIS_SOCKET_CONNECT_TIMEOUT="1",
        REDIS_PASWORD="typo",
        TRADOVATE_SEC_FILE=str(secret),
    )
    code, report = doctor(cli, env)
    assert code == 1
    texts = [f"{f['level']} {f['topic']}: {f['text']}" for f in report["findings"]]
    assert (
        "problem settings: REDIS_PASWORD is not a known setting; did you mean REDIS_PASSWORD?"
        in texts
    )
    assert any(
        t.startswith("problem redis:") and "(tls)" in t and "REDIS_SSL=false" in t for t in texts
    )
    assert any(t.startswith("problem files:") and str(secret) in t and "0644" in t for t in texts)
    assert {row["name"]: row for row in report["settings"]}["TRADOVATE_SEC"]["value"] == (
        f"from file {secret}"
    )


def test_an_invalid_configuration_exits_78(cli: Callable[[dict[str, str]], Run]) -> None:
    code, report = doctor(cli, {"ORCA_TOKEN_TTL": "soon", "REDIS_PORT": "99999"})
    assert code == 78
    assert any("ORCA_TOKEN_TTL" in p for p in report["config_problems"])
    assert any("REDIS_PORT" in p for p in report["config_problems"])


@pytest.mark.parametrize("addr", ["0.0.0.0:9108", "10.1.2.3:9108"])
def test_a_health_endpoint_beyond_loopback_is_a_warning(
    cli: Callable[[dict[str, str]], Run],
    served_tradovate: FakeTradovate,
    redis_server: RedisServer,
    addr: str,
) -> None:
    code, report = doctor(
        cli, daemon_env(served_tradovate, redis_server.url, ORCA_HEALTH_ADDR=addr)
    )
    assert code == 0
    assert any(f["level"] == "warning" and f["topic"] == "health" for f in report["findings"])


def test_doctor_says_each_logins_route_and_what_it_needs(
    cli: Callable[[dict[str, str]], Run], served_tradovate: FakeTradovate, tmp_path: Path
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[[accounts]]\nname = "APEX_266668"\npassword_env = "PW_1"\nlogin = "tradingview"\n'
        '[[accounts]]\nname = "APEX_272045"\npassword_env = "PW_2"\n'
    )
    env = daemon_env(served_tradovate, ORCA_ACCOUNTS_FILE=str(accounts), PW_1="a", PW_2="b")
    del env["ORCA_ACCOUNTS"]
    _, report = doctor(cli, env)
    said = {f["text"].split(" ")[0]: f["text"] for f in report["findings"] if f["topic"] == "login"}
    assert said["APEX_266668"].startswith("APEX_266668 logs in by tradingview: its name and")
    assert "TradingView add-on" in said["APEX_266668"]
    assert f"{served_tradovate.tv_base_url}/authorize" in said["APEX_266668"]
    assert said["APEX_272045"].startswith("APEX_272045 logs in by api: accesstokenrequest")
    assert "TRADOVATE_SEC" in said["APEX_272045"]


def test_two_budget_groups_on_one_24_are_named_a_problem(
    cli: Callable[[dict[str, str]], Run],
    served_tradovate: FakeTradovate,
    redis_server: RedisServer,
) -> None:
    """Tradovate counts budgets per /24: an instance of group `b` on 127.0.3.9 and this one of
    group `a` on 127.0.3.1 spend one budget, though each believes it has its own."""
    import time

    from daemon.store.heartbeat import Heartbeat, write_heartbeat

    now = time.time()
    other = Heartbeat("other:1:ab", 1, None, now, 4, group="b", address="127.0.3.9")
    write_heartbeat(redis_server.client(), other)
    env = daemon_env(
        served_tradovate,
        redis_server.url,
        ORCA_BUDGET_GROUP="a",
        TRADOVATE_LOCAL_ADDRESS="127.0.3.1",
    )
    code, report = doctor(cli, env)
    assert code == 1
    found = [f for f in report["findings"] if f["topic"] == "budget" and f["level"] == "problem"]
    assert found, report["findings"]
    assert "127.0.3.0/24" in found[0]["text"]
    env["TRADOVATE_LOCAL_ADDRESS"] = "127.0.4.1"  # another /24: a budget of its own
    code, report = doctor(cli, env)
    assert not [f for f in report["findings"] if f["level"] == "problem"], report["findings"]
