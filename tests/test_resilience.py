"""Never lose a token: short-lived tokens, Redis lost, Tradovate faults, standby instances.
Daemons run as subprocesses against a real redis-server and the simulated Tradovate."""

from __future__ import annotations

import json
import signal
import time

import pytest

from daemon.sim.environment import wait_for
from daemon.sim.observe import (
    TokenSampler,
    all_live,
    all_names,
    busiest_pid,
    owner_pids,
    shared_as_assigned,
)
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import LOGIN_PATH, FakeTradovate, numbered_desk
from tests.helpers import StartDaemon, daemon_env, http_get, metric_value


@pytest.mark.long
@pytest.mark.timeout(90)
def test_short_lived_tokens_are_always_valid(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """6 s tokens for 15 s: every sample of every key holds a live token, one session each."""
    with FakeTradovate(token_lifetime_s=6) as fake:
        names = all_names(fake)
        start_daemon(daemon_env(fake, redis_server.url))
        client = redis_server.client()
        wait_for(lambda: all_live(client, names, fake), what="every key live")
        sampler = TokenSampler(redis_server.client, names, fake.is_live, every_s=0.05).start()
        time.sleep(15)  # the measurement window itself, sampled every 50 ms
        samples = sampler.stop()
    assert samples.taken > 100
    assert (samples.stale, samples.missing, samples.unreadable) == (0, 0, 0)
    assert set(fake.seen.sessions_opened.values()) == {1}
    assert min(fake.seen.renewals.values()) >= 3


@pytest.mark.timeout(90)
def test_redis_restart_is_restored_without_asking_tradovate(
    served_tradovate: FakeTradovate, own_redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    fake = served_tradovate
    names = all_names(fake)
    daemon = start_daemon(daemon_env(fake, own_redis_server.url, ORCA_HEALTH_ADDR="127.0.0.1:0"))
    client = own_redis_server.client()
    wait_for(lambda: all_live(client, names, fake), what="every key live")
    health = daemon.event("daemon.starting")["health"]
    requests_before = fake.seen.received

    own_redis_server.kill()
    daemon.event("redis.down")
    status, body = http_get(f"http://{health}/readyz")
    assert status == 503
    assert json.loads(body)["redis"] == {
        "up": False,
        "reason": "refused",
        "hint": "nothing listens there: is Redis running? check REDIS_PORT",
    }
    assert "orca_redis_up 0.0" in http_get(f"http://{health}/metrics")[1]

    def refused_calls() -> float:
        metrics = http_get(f"http://{health}/metrics")[1]
        return metric_value(metrics, 'orca_redis_errors_total{reason="refused"}')

    wait_for(lambda: refused_calls() >= 3, what="several probes failing while Redis is down")
    assert daemon.process.poll() is None

    own_redis_server.start()  # empty: nothing is persisted
    restored_after = time.monotonic()
    wait_for(lambda: all_live(client, names, fake), timeout=15, what="every key restored")
    assert time.monotonic() - restored_after < 15
    assert fake.seen.received == requests_before  # Tradovate was not asked
    assert all(client.get(f"orca:lease:{login}") for login in fake.users)  # re-taken
    events = [e["event"] for e in daemon.events()]
    assert events.count("redis.down") == 1
    assert events.count("redis.up") == 2  # at start, and once back
    assert "token.restored" in events
    assert wait_for(lambda: http_get(f"http://{health}/readyz")[0] == 200, what="ready again")


def test_flushall_is_repaired_by_the_reconcile_pass(
    served_tradovate: FakeTradovate, redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    names = all_names(served_tradovate)
    start_daemon(daemon_env(served_tradovate, redis_server.url))
    client = redis_server.client()
    wait_for(lambda: all_live(client, names, served_tradovate), what="every key live")
    requests_before = served_tradovate.seen.received
    client.delete("token:PAAPEX2720450000003")
    client.flushall()
    wait_for(lambda: all_live(client, names, served_tradovate), timeout=10, what="restored")
    assert served_tradovate.seen.received == requests_before


def test_a_failing_login_never_delays_another(
    served_tradovate: FakeTradovate, redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    served_tradovate.inject(LOGIN_PATH, "hang", user="APEX_265995", hang_s=20)
    served_tradovate.inject(LOGIN_PATH, "http_503", user="APEX_136189", count=100)
    daemon = start_daemon(
        daemon_env(served_tradovate, redis_server.url, ORCA_TRADOVATE_TIMEOUT="15")
    )
    healthy = [
        "APEX_266668",
        *served_tradovate.users["APEX_266668"].accounts,
        "APEX_272045",
        *served_tradovate.users["APEX_272045"].accounts,
    ]
    client = redis_server.client()
    wait_for(lambda: all_live(client, healthy, served_tradovate), timeout=5, what="healthy logins")
    assert client.get("token:APEX_265995") is None  # still hanging: its own job only
    failed = daemon.event("token.refresh_failed")
    assert failed["login"] == "APEX_136189"
    assert failed["outcome"] == "unavailable"


@pytest.mark.long
@pytest.mark.timeout(120)
def test_a_killed_instances_logins_are_taken_over_without_a_new_session(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    with FakeTradovate(numbered_desk(24, 1), token_lifetime_s=60, address_budgets=False) as fake:
        names, logins = all_names(fake), list(fake.users)
        extra = {
            "ORCA_HEALTH_ADDR": "127.0.0.1:0",
            "ORCA_RENEW_BUDGET_PER_HOUR": "1000",
            "ORCA_AUTH_RATE_LIMIT": "1000",
        }
        first = start_daemon(daemon_env(fake, redis_server.url, **extra))
        client = redis_server.client()
        wait_for(lambda: all_live(client, names, fake), what="every key live")
        second = start_daemon(daemon_env(fake, redis_server.url, **extra))
        pids = {first.process.pid, second.process.pid}
        wait_for(lambda: shared_as_assigned(client, logins, 2), what="the logins shared")
        assert set(owner_pids(client, logins).values()) == pids  # 24 logins: both own some
        victim = first if busiest_pid(client, logins) == first.process.pid else second
        survivor = second if victim is first else first
        health = survivor.event("daemon.starting")["health"]
        wait_for(lambda: http_get(f"http://{health}/readyz")[0] == 200, what="ready")
        metrics = wait_for(  # set at the end of the probe that took the leases
            lambda: (
                (text := http_get(f"http://{health}/metrics")[1])
                and "orca_leader 1.0" in text
                and text
            ),
            what="orca_leader 1",
        )
        assert 1 <= metric_value(metrics, "orca_logins_owned") <= len(logins) / 2
        theirs = [
            login
            for login, pid in owner_pids(client, logins).items()
            if pid != survivor.process.pid
        ]

        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(
            lambda: set(owner_pids(client, logins).values()) == {survivor.process.pid},
            timeout=30,
            what="the killed instance's logins taken over",
        )
        assert time.monotonic() - killed_at < 30
        wait_for(  # every login it took over, from Redis (its log may trail the takeover)
            lambda: (
                set(theirs)
                <= {e["login"] for e in survivor.events() if e["event"] == "token.adopted"}
            ),
            what="the taken-over tokens adopted",
        )
        # The new owner renews what it found when it falls due: still one session per login.
        renewed_before = sum(fake.seen.renewals.values())
        wait_for(
            lambda: sum(fake.seen.renewals.values()) >= renewed_before + 4,
            timeout=60,
            what="renewals by the survivor",
        )
        assert all_live(client, names, fake)
        assert set(fake.seen.sessions_opened.values()) == {1}
        metrics = http_get(f"http://{health}/metrics")[1]
        assert metric_value(metrics, "orca_logins_owned") == len(logins)


def test_a_clean_stop_hands_its_logins_over_at_once(
    served_tradovate: FakeTradovate, redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    logins = list(served_tradovate.users)
    client = redis_server.client()
    first = start_daemon(daemon_env(served_tradovate, redis_server.url))
    first.event("logins.taken")
    second = start_daemon(daemon_env(served_tradovate, redis_server.url))
    wait_for(lambda: shared_as_assigned(client, logins, 2), what="the logins shared")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=10) == 0
    stopped_at = time.monotonic()
    wait_for(
        lambda: set(owner_pids(client, logins).values()) == {second.process.pid},
        timeout=10,
        what="every login with the survivor",
    )
    assert time.monotonic() - stopped_at < 6
    assert set(served_tradovate.seen.sessions_opened.values()) == {1}
