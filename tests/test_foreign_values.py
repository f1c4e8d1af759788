"""What another program writes to the shared Redis cannot stop the daemon (issue 21, first
step): a value that is not UTF-8 in a login's token key, or JSON nested past the parser's depth
in its status, is a foreign value. The daemon restores its own key and every CLI verb answers."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable

import fakeredis
import pytest
import redis

from daemon.constants import LEGACY_LEADER_KEY, RECONCILE_FULL_CHECK_S, SHARED_RENEW_BLOCK_S
from daemon.sim.environment import wait_for
from daemon.sim.observe import all_live, all_names
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate, numbered_desk
from daemon.store.budget import RENEW, AddressBudget
from daemon.store.lease import holders, lease_key
from daemon.store.requests import push_request
from daemon.store.tokens import report_unauthorized
from tests.helpers import (
    FakeClock,
    Run,
    StartDaemon,
    daemon_env,
    http_get,
    metric_value,
    two_login_world,
)
from tests.virtual_jobs import refresher_jobs, virtual_desk


def test_a_non_utf8_token_and_a_deeply_nested_status_stop_nothing(
    served_tradovate: FakeTradovate,
    redis_server: RedisServer,
    start_daemon: StartDaemon,
    cli: Callable[[dict[str, str]], Run],
) -> None:
    fake = served_tradovate
    env = daemon_env(fake, redis_server.url)
    daemon = start_daemon(env)
    client = redis_server.client(encoding_errors="replace")  # the test reads the foreign value too
    names = all_names(fake)
    wait_for(lambda: all_live(client, names, fake), what="every key live")
    raw = redis.Redis(**redis_server.client_options())
    raw.set("token:APEX_266668", b"\xff\xfe\x80not-utf-8")
    raw.set("orca:status:APEX_272045", b"[" * 5_000)
    run = cli(env)
    for verb in (("status", "--json"), ("check",), ("tokens", "list"), ("health",)):
        code, out, err = run(*verb)
        assert "Traceback" not in out + err, (verb, err)
        assert code in (0, 1), (verb, code, err)
    back_within_s = RECONCILE_FULL_CHECK_S + 5  # one pass that reads every value, and its write
    wait_for(lambda: all_live(client, names, fake), timeout=back_within_s, what="its keys back")
    assert daemon.process.poll() is None


def test_a_restart_over_a_foreign_token_value_names_it_once_before_replacing_it(
    served_tradovate: FakeTradovate, redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """A non-UTF-8 token value and a deeply nested status for the same login, found at a
    restart: each key named once (what it was, a fingerprint, never the value), then the
    login's own token written over them."""
    fake = served_tradovate
    env = daemon_env(fake, redis_server.url)
    client = redis_server.client(encoding_errors="replace")
    names = all_names(fake)
    first = start_daemon(env)
    wait_for(lambda: all_live(client, names, fake), what="every key live")
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    raw = redis.Redis(**redis_server.client_options())
    raw.set("token:APEX_265995", b"\xff\xfe\x80not-utf-8")
    raw.set("orca:status:APEX_265995", b"[" * 5_000)
    second = start_daemon(env)
    wait_for(lambda: all_live(client, names, fake), timeout=15, what="the daemon's own keys back")
    foreign = [e for e in second.events() if e["event"] == "redis.foreign_value"]
    named = sorted(e["key"] for e in foreign)
    assert named == ["orca:status:APEX_265995", "token:APEX_265995"], foreign
    token_said = next(e for e in foreign if e["key"] == "token:APEX_265995")
    assert token_said["what"].startswith("not a token (")
    assert token_said["what"].endswith("replaced by a new login")
    assert len(token_said["fingerprint"]) == 8
    assert "not-utf-8" not in "\n".join(second.lines)


def test_a_forged_penalty_block_is_trusted_only_as_far_as_tradovate_documents() -> None:
    """`orca:budget:{group}:renew:blocked` set by another program: `abc` is no block (not
    "Redis is down"), `1e300` or now + 10^6 blocks no longer than the endpoint's cap."""
    client = fakeredis.FakeRedis(decode_responses=True)
    budget = AddressBudget(
        client, "g", {RENEW: 15}, window_s=3_600, longest_block_s={RENEW: SHARED_RENEW_BLOCK_S}
    )
    key = "orca:budget:{g}:renew:blocked"
    client.set(key, "abc")
    assert budget.try_spend(RENEW, 1_000.0, who="A").ok
    for forged in ("1e300", repr(1_000.0 + 10**6), "inf"):
        client.set(key, forged)
        spend = budget.try_spend(RENEW, 1_000.0, who="A")
        assert not spend.ok
        assert spend.wait_s == SHARED_RENEW_BLOCK_S


def test_a_forged_renewal_block_lapses_no_token() -> None:
    """Six simulated hours of 80-minute tokens; another program sets the group's renewal block
    to now + 10^6 at 1 h, to 1e300 at 3 h, each just before a renewal is due: a renewal block
    from Redis holds renewals 5 minutes at most, so every token stays live and no login opens
    a second session. (One that rewrites it every minute holds renewals for as long as it
    does; OrcaTokenExpiringWithoutRefresh fires.)"""
    with two_login_world() as world:
        names = list(world.fake.users)
        key = f"orca:budget:{{{world.refresher.budget.group}}}:renew:blocked"
        dead, minute = 0, 0

        def each_minute() -> None:
            nonlocal dead, minute
            if minute in (60, 180):
                forged = "1e300" if minute == 180 else repr(world.clock() + 10**6)
                world.redis.set(key, forged)
            dead += sum(1 for n in names if not world.fake.is_live(world.token(n) or ""))
            minute += 1

        jobs = refresher_jobs(world.refresher, world.clock)
        jobs.add_housekeeping({"minute": (each_minute, 60)})
        jobs.run_for(6 * 3_600 - 1)
        assert minute == 6 * 60
        assert dead == 0
        assert dict(world.fake.seen.sessions_opened) == dict.fromkeys(names, 1)
        assert min(world.fake.seen.renewals[n] for n in names) >= 4


def test_a_forged_renewal_block_is_trusted_5_minutes_of_tradovate_s_clock_on_any_scale() -> None:
    """The same forgery on a simulator's 60 s "hour" (80-minute tokens live 80 s), through the
    whole daemon on virtual time: the block is trusted 5 s, Tradovate's 5 minutes on that
    scale. (It was trusted 5 real minutes: 0 renewals and 6 new sessions in 60 s.)"""
    clock = FakeClock(1_800_000_000.0)
    fake = FakeTradovate(numbered_desk(4, 1), token_lifetime_s=80, clock=clock)
    names = list(fake.users)
    with virtual_desk(fake, clock) as desk:
        desk.jobs.run_for(10)
        key = f"orca:budget:{{{desk.daemon.settings.budget_group}}}:renew:blocked"
        invalid = 0

        def sample() -> None:
            nonlocal invalid
            invalid += sum(1 for name in names if not desk.key_valid(name))

        desk.jobs.add_housekeeping({"sample": (sample, 0.25)})
        start = clock() - 10
        for forged_at in (60.0, 180.0):  # an "hour" and three in, as above
            desk.jobs.run_until(start + forged_at)
            desk.redis.set(key, repr(clock() + 10**6))
        desk.jobs.run_until(start + 6 * fake.budget_window_s)
    assert invalid == 0
    assert dict(fake.seen.sessions_opened) == dict.fromkeys(names, 1)
    assert min(fake.seen.renewals[name] for name in names) >= 4


def test_a_forged_leader_without_a_ttl_and_a_forged_lease_stop_nothing(
    served_tradovate: FakeTradovate, redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """`SET orca:leader x` (no protocol-1 daemon anywhere) and a lease of a login set to
    another value without a TTL, both before the daemon starts: it takes every login."""
    fake = served_tradovate
    client = redis_server.client()
    client.set(LEGACY_LEADER_KEY, "x")
    client.set(lease_key("APEX_266668"), "someone-else")
    daemon = start_daemon(daemon_env(fake, redis_server.url))
    names = all_names(fake)
    wait_for(lambda: all_live(client, names, fake), what="every key live")
    assert daemon.event("cluster.legacy_leader_ignored")["why"] == "no TTL"
    assert daemon.event("lease.foreign")["key"] == lease_key("APEX_266668")
    owner = daemon.event("daemon.starting")["instance"]
    logins = list(fake.users)
    assert set(holders(client, logins).values()) == {owner}
    assert sum(fake.seen.sessions_opened.values()) == len(logins)


def test_a_renewed_legacy_leader_keeps_it_standing_by_visibly(
    served_tradovate: FakeTradovate, redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """A legacy `orca:leader` with a lease's TTL, renewed, and no protocol-1 daemon refreshing
    anything: the new daemon stands by (never a second owner), but says so: /readyz 503 and
    orca_logins_unrefreshed, the gauge OrcaLoginsUnrefreshed fires on."""
    client = redis_server.client()
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(1.0):
            client.set(LEGACY_LEADER_KEY, "old-host:1:aaaa:bbbbbbbb", px=10_000)

    client.set(LEGACY_LEADER_KEY, "old-host:1:aaaa:bbbbbbbb", px=10_000)
    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        env = daemon_env(served_tradovate, redis_server.url, ORCA_HEALTH_ADDR="127.0.0.1:0")
        daemon = start_daemon(env)
        health = daemon.event("daemon.starting")["health"]
        daemon.event("cluster.protocol_mismatch")
        logins = len(served_tradovate.users)

        def unrefreshed() -> tuple[float, str] | None:
            _, metrics = http_get(f"http://{health}/metrics")
            count = metric_value(metrics, "orca_logins_unrefreshed")
            return (count, metrics) if count == logins else None

        wait_for(unrefreshed, what="every login counted as unrefreshed")
        status, body = http_get(f"http://{health}/readyz")
        assert status == 503
        assert json.loads(body)["unrefreshed"] == logins
        assert served_tradovate.seen.received == 0  # standing by: nothing sent
    finally:
        stop.set()
        renewer.join()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.mark.long
@pytest.mark.timeout(90)
def test_a_flood_of_requests_for_one_login_costs_it_two_renewals_and_the_others_nothing(
    served_tradovate: FakeTradovate, redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """200 refresh requests and 100 401 reports for one login over 30 s, a 50 MB request, and
    values that are no request: every login stays valid, the flooded one spends at most 2
    renewals and no login, the others none, and the daemon stays under 150 MB."""
    fake = served_tradovate
    client = redis_server.client()
    daemon = start_daemon(daemon_env(fake, redis_server.url))
    names = all_names(fake)
    wait_for(lambda: all_live(client, names, fake), what="every key live")
    victim = "APEX_266668"
    sessions_before = dict(fake.seen.sessions_opened)
    client.rpush("orca:refresh:requests", "x" * 50 * 1024 * 1024)
    client.rpush("orca:refresh:requests", "[" * 400, '{"id": "a", "login": "*"}', "{}")
    started = time.monotonic()
    for n in range(300):
        if n % 3 == 2:
            report_unauthorized(victim, client=client)
        else:
            push_request(client, victim if n % 2 else "APEX_266668-ACC1")
        time.sleep(max(0.0, started + n * 0.1 - time.monotonic()))
    wait_for(lambda: client.llen("orca:refresh:requests") == 0, what="every request taken")
    wait_for(lambda: all_live(client, names, fake), what="every key live after the flood")
    assert fake.seen.renewals[victim] <= 2
    assert dict(fake.seen.sessions_opened) == sessions_before
    assert sum(n for user, n in fake.seen.renewals.items() if user != victim) == 0
    assert _rss_mib(daemon.process.pid) < 150
    invalid = daemon.event("refresh_request.invalid")
    assert invalid["what"] == f"{50 * 1024 * 1024} bytes"
    assert daemon.process.poll() is None


def test_keys_of_another_type_where_the_daemon_keeps_its_own_stop_nothing(
    served_tradovate: FakeTradovate, redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """Another program's HSET or RPUSH on the daemon's own keys (the membership set, a
    budget's spends and block, a login's lease, status and token key): each is said once and
    replaced; every login is written, renewed and answered as before."""
    fake = served_tradovate
    client = redis_server.client()
    group = "{default}"
    client.hset("orca:instances", "x", "1")
    client.set(f"orca:budget:{group}:renew:pending", "not a sorted set")
    client.rpush(f"orca:budget:{group}:renew:blocked", "a list")
    client.zadd(f"orca:budget:{group}:renew", {"forged|ahead": 10**12})  # dated centuries ahead
    client.rpush(lease_key("APEX_272045"), "a", "list")
    client.hset("orca:status:APEX_136189", "state", "ok")
    client.hset("token:APEX_265995", "token", "x")
    daemon = start_daemon(daemon_env(fake, redis_server.url))
    names = all_names(fake)
    wait_for(lambda: all_live(client, names, fake), what="every key live")
    said = {e["key"] for e in daemon.events() if e["event"] == "redis.foreign_value"}
    assert {"orca:instances", "orca:status:APEX_136189"} <= said
    assert client.type("orca:instances") == "set"
    assert daemon.event("lease.foreign")["key"] == lease_key("APEX_272045")
    assert daemon.process.poll() is None
    # Renewals spend the budget as before (a forced one for each login).
    assert push_request(client, None)
    wait_for(lambda: sum(fake.seen.renewals.values()) >= 4, what="a renewal for each login")
    assert client.type(f"orca:budget:{group}:renew:pending") in ("zset", "none")
    assert client.zscore(f"orca:budget:{group}:renew", "forged|ahead") is None
