"""deploy/redis-acl.conf: each user can do its whole job and nothing more."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from daemon import cache, price, tokens
from daemon.sim.environment import wait_for
from daemon.sim.observe import all_live, all_names
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate
from tests.helpers import DaemonProcess, Run, daemon_env, seed

ACL_FILE = Path(__file__).parent.parent / "deploy" / "redis-acl.conf"


def create_user(server: RedisServer, name: str) -> dict[str, str]:
    """ACL SETUSER with the rules of deploy/redis-acl.conf; returns the env to log in as it."""
    line = next(
        line for line in ACL_FILE.read_text().splitlines() if line.startswith(f"user {name} ")
    )
    password = f"pw-{name}-7"
    rules = [rule.replace(">CHANGE_ME", f">{password}") for rule in line.split()[2:]]
    server.client().acl_setuser(name, reset=True)  # a clean slate, then the file's rules
    # The file's rule syntax, verbatim (acl_setuser() would need it taken apart first).
    server.client().execute_command("ACL", "SETUSER", name, *rules)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    return {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(server.port),
        "REDIS_USERNAME": name,
        "REDIS_PASSWORD": password,
        "REDIS_URL": "",
    }


def denials(server: RedisServer) -> list[dict[str, Any]]:
    return list(server.client().acl_log())


def test_the_daemon_runs_green_with_exactly_its_acl(
    own_redis_server: RedisServer, served_tradovate: FakeTradovate, tmp_path: Path
) -> None:
    env = {**daemon_env(served_tradovate), **create_user(own_redis_server, "orca-daemon")}
    env.pop("REDIS_URL")
    # The price feed too: its lease and status, SET price:*, PUBLISH on both kinds of channel.
    contract = served_tradovate.market.front_month("MNQ")
    env |= {
        "ORCA_PRICE_SYMBOLS": contract,
        "TRADOVATE_MD_URL": served_tradovate.market.url,
        "ORCA_PRICE_LEGACY_CHANNELS": "true",
    }
    admin = own_redis_server.client()
    daemon = DaemonProcess(env, cwd=str(tmp_path))
    try:
        names = all_names(served_tradovate)
        wait_for(lambda: all_live(admin, names, served_tradovate), what="17 live keys")
        wait_for(lambda: admin.get(f"price:{contract}:latest"), what="a price")
        assert all(admin.get(f"orca:lease:{login}") for login in served_tradovate.users)
        admin.flushall()  # reconcile and the leases' re-take run as that user too
        wait_for(lambda: all_live(admin, names, served_tradovate), what="restored keys")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        daemon.stop()
    assert denials(own_redis_server) == []
    assert not [e for e in daemon.events() if e["level"] in ("warning", "error")]


def test_a_verb_that_needs_more_fails_with_a_clear_message(
    own_redis_server: RedisServer, cli: Callable[[dict[str, str]], Run]
) -> None:
    run = cli(create_user(own_redis_server, "orca-daemon"))
    code, out, err = run("cache", "stats")  # SCAN over hft:*: the daemon's user has neither
    assert code == 1
    assert out == ""
    assert err.startswith("orca-tokens: Redis refused this command (")
    assert "the ACL user needs more permissions for it: see docs/deploy.md#redis-acl" in err
    assert "Traceback" not in err


def test_operators_can_run_every_read_verb(
    own_redis_server: RedisServer, cli: Callable[[dict[str, str]], Run]
) -> None:
    seed(own_redis_server)
    run = cli({**create_user(own_redis_server, "orca-operator"), "ORCA_ACCOUNTS": "APEX_1"})
    for argv in (
        ("check",),
        ("tokens", "list"),
        ("tokens", "ttl", "APEX_1"),
        ("tokens", "get", "APEX_1"),
        ("cache", "stats"),
        ("price", "get", "MNQZ5"),
        ("info",),
        ("cache", "clear", "accounts"),
        ("tokens", "delete", "PA2"),
    ):
        code, _, err = run(*argv)
        assert code == 0, (argv, err)
    assert denials(own_redis_server) == []


def user_client(server: RedisServer, name: str) -> redis.Redis:
    """A client logged in as the ACL user `name`, created with the file's rules."""
    env = create_user(server, name)
    return redis.Redis(
        host="127.0.0.1",
        port=server.port,
        username=env["REDIS_USERNAME"],
        password=env["REDIS_PASSWORD"],
        decode_responses=True,
    )


def test_trading_programs_can_use_every_module(own_redis_server: RedisServer) -> None:
    seed(own_redis_server)
    client = user_client(own_redis_server, "orca-trader")
    assert tokens.get_token("APEX_1", client=client) is not None
    assert tokens.token_ttl("APEX_1", client=client) > 0
    assert len(list(tokens.iter_tokens(client=client))) == 3
    assert cache.get_or_fetch("positions", "PA1", fetch=lambda: [1], client=client) == [1]
    assert cache.stats(client=client)["total"] >= 1
    assert cache.clear("positions", client=client) >= 0
    stop = threading.Event()
    seen: list[dict[str, object]] = []

    def follow() -> None:
        for update in price.stream("MESZ5", client=client, stop=stop, poll_s=0.2):
            seen.append(update)
            stop.set()

    follower = threading.Thread(target=follow)
    follower.start()
    price.store("MESZ5", {"Last": 1.0, "Timestamp": 5}, client=client)
    wait_for(lambda: seen, what="a price through the stream")
    follower.join(5)
    assert price.latest("MESZ5", client=client) == {"Last": 1.0, "Timestamp": 5}
    request_id = tokens.report_unauthorized("APEX_1", client=client)
    owner = own_redis_server.client()
    assert request_id in str(owner.lindex("orca:refresh:requests", -1))
    refused: list[Callable[[], object]] = [
        lambda: client.set("orca:leader", "usurper"),
        lambda: client.set("token:APEX_1", "forged"),  # tokens are read-only to it
        lambda: client.unlink("token:APEX_1"),
        lambda: tokens.delete_token("APEX_1", client=client),  # an operator's call
        lambda: client.set("orca:status:APEX_1", "{}"),
        lambda: client.get("orca:lease:APEX_1"),
        lambda: client.lpop("orca:refresh:requests"),  # it asks; only daemons take
    ]
    for call in refused:
        with pytest.raises(redis.exceptions.NoPermissionError):
            call()
    assert owner.get("token:APEX_1") is not None
    assert sum(entry["count"] for entry in denials(own_redis_server)) == len(refused)


def test_operators_may_delete_a_token_and_ask_for_a_refresh(own_redis_server: RedisServer) -> None:
    seed(own_redis_server)
    client = user_client(own_redis_server, "orca-operator")
    assert tokens.delete_token("APEX_1", client=client)
    assert tokens.report_unauthorized("APEX_2", client=client)
    assert denials(own_redis_server) == []
