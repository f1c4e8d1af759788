"""The edges, with real processes: a stop mid-refresh, a Redis that hangs, a leader paused and
resumed, Redis misconfigured four ways, `run --once` beside a live daemon."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.sim.environment import wait_for
from daemon.sim.observe import all_live, all_names, busiest_pid, owner_pids, shared_as_assigned
from daemon.sim.redis_server import RedisServer, TlsFiles
from daemon.sim.tradovate import LOGIN_PATH, FakeTradovate, numbered_desk
from tests.helpers import REDIS_PASSWORD, DaemonProcess, Spawned, StartDaemon, daemon_env, http_get

STOP_BUDGET_S = 7.0


def no_tracebacks(process: DaemonProcess) -> bool:
    return not any("Traceback" in line or "exc_info" in line for line in process.lines)


@pytest.mark.timeout(60)
def test_no_login_starts_after_sigterm(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """40 logins, two at a time, 0.4 s per answer: SIGTERM mid-pass. The refreshes in flight
    may finish; no new one starts, and the process is gone within the budget."""
    with FakeTradovate(numbered_desk(40, 1), latency_s=0.4) as fake:
        env = daemon_env(
            fake, redis_server.url, ORCA_REFRESH_CONCURRENCY="2", ORCA_AUTH_RATE_LIMIT="1000"
        )
        daemon = start_daemon(env)
        wait_for(
            lambda: sum(e["event"] == "token.refreshed" for e in daemon.events()) >= 2,
            what="the pass under way",
        )
        signalled_at = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=STOP_BUDGET_S + 3) == 0
        stopped_in = time.monotonic() - signalled_at
    # A request sent before the signal reaches the simulator a few ms later, at most.
    late_logins = [
        t for t, path in fake.seen.arrivals if path == LOGIN_PATH and t > signalled_at + 0.05
    ]
    assert late_logins == []
    assert sum(fake.seen.sessions_opened.values()) < 40
    assert stopped_in < STOP_BUDGET_S
    assert no_tracebacks(daemon)


@pytest.mark.timeout(60)
def test_stop_within_the_budget_while_redis_is_sigstopped(
    served_tradovate: FakeTradovate, own_redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    daemon = start_daemon(daemon_env(served_tradovate, own_redis_server.url))
    client = own_redis_server.client()
    wait_for(lambda: all_live(client, all_names(served_tradovate), served_tradovate))
    assert own_redis_server.process is not None
    own_redis_server.process.send_signal(signal.SIGSTOP)
    try:
        daemon.event("redis.down", timeout=15)  # a hung Redis is noticed, with why
        signalled_at = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=STOP_BUDGET_S + 5) == 0
        assert time.monotonic() - signalled_at < STOP_BUDGET_S
    finally:
        own_redis_server.process.send_signal(signal.SIGCONT)
    down = daemon.event("redis.down")
    assert (down["reason"], down["hint"].startswith("no answer in time")) == ("timeout", True)


@pytest.mark.long
@pytest.mark.timeout(120)
def test_a_paused_owner_resumed_writes_nothing_and_never_logs_in(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """SIGSTOP an owner past its leases and heartbeat; the other instance takes its logins and
    renews them; SIGCONT it, its renewals overdue by then: it learns its leases are lost before
    any Tradovate call or write, takes back a share only through free leases, adopting what
    Redis holds, and every login still has one session. (Tokens live 60 s: the takeover's
    10 s must fit in the 11 s a token has left when its renewal falls due.)"""
    with FakeTradovate(token_lifetime_s=60) as fake:
        env = daemon_env(fake, redis_server.url)
        names, logins = all_names(fake), list(fake.users)
        client = redis_server.client()
        first = start_daemon(env)
        wait_for(lambda: all_live(client, names, fake), what="every key live")
        second = start_daemon(env)
        wait_for(lambda: shared_as_assigned(client, logins, 2), what="shared")
        old = first if busiest_pid(client, logins) == first.process.pid else second
        new = second if old is first else first
        olds = {
            login for login, pid in owner_pids(client, logins).items() if pid == old.process.pid
        }
        old.signal(signal.SIGSTOP)
        # Judged by the log's own timestamps: lines written before the pause may still be on
        # their way through the pipe.
        paused_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as the log writes it
        try:
            wait_for(
                lambda: set(owner_pids(client, logins).values()) == {new.process.pid},
                timeout=25,
                what="takeover",
            )
            wait_for(
                lambda: olds & {e["login"] for e in new.events() if e.get("outcome") == "renew"},
                timeout=60,
                what="the other instance renewing a paused one's login (its renewal now overdue)",
            )
        finally:
            old.signal(signal.SIGCONT)

        def after_resume() -> list[dict[str, Any]]:
            return [e for e in old.events() if e["timestamp"] > paused_at]

        wait_for(lambda: "lease.lost" in [e["event"] for e in after_resume()])
        wait_for(lambda: shared_as_assigned(client, logins, 2), what="shared again")
        wait_for(lambda: all_live(client, names, fake), what="every key live after the resume")
        resumed = after_resume()
        events = [e["event"] for e in resumed]
        # A refresh in flight at the pause may still finish its line (its write, fenced, landed
        # before the pause or not at all: `token.not_written`). Once the loss is known, nothing
        # is written but for logins taken back through free leases.
        known = resumed[events.index("lease.lost") + 1 :]
        taken_back: set[str] = set()
        for event in known:
            if event["event"] == "logins.taken":
                taken_back |= set(event["logins"])
            elif event["event"] == "token.refreshed":
                assert event["login"] in taken_back, event
        assert set(fake.seen.sessions_opened.values()) == {1}


@pytest.mark.timeout(60)
def test_redis_misconfigurations_are_named_in_the_log_and_readyz(
    own_redis_server: RedisServer,
    redis_tls_server: RedisServer,
    tls_files: TlsFiles,
    start_daemon: StartDaemon,
) -> None:
    own_redis_server.client().config_set("requirepass", "the-right-Pa55")
    plain, secure = own_redis_server.port, redis_tls_server.port
    base = {"REDIS_HOST": "127.0.0.1", "ORCA_HEALTH_ADDR": "127.0.0.1:0"}
    cases = {
        "wrong password": (
            {"REDIS_PORT": str(plain), "REDIS_PASSWORD": "not-the-right-one"},
            "auth",
            "WRONGPASS",
        ),
        "wrong CA": (
            {"REDIS_PORT": str(secure), "REDIS_SSL": "true", "REDIS_PASSWORD": REDIS_PASSWORD},
            "tls",
            "REDIS_SSL_CA_CERTS",
        ),
        "TLS to a plain port": (
            {
                "REDIS_PORT": str(plain),
                "REDIS_SSL": "true",
                "REDIS_SSL_CA_CERTS": str(tls_files.ca_cert),
            },
            "tls",
            "REDIS_SSL=false",
        ),
        "plain to a TLS port": (
            {"REDIS_PORT": str(secure), "REDIS_PASSWORD": REDIS_PASSWORD},
            "other",
            "REDIS_SSL=true",
        ),
    }
    with FakeTradovate() as fake:
        daemons = {
            case: start_daemon(daemon_env(fake, **base, **settings))
            for case, (settings, _, _) in cases.items()
        }
        started = time.monotonic()
        for case, (_, reason, hint) in cases.items():
            daemon = daemons[case]
            down = daemon.event("redis.down", timeout=15)
            assert (case, down["reason"]) == (case, reason)
            assert hint in down["hint"], (case, down["hint"])
            health = daemon.event("daemon.starting")["health"]
            status, body = http_get(f"http://{health}/readyz")
            assert status == 503
            assert json.loads(body)["redis"] == {
                "up": False,
                "reason": reason,
                "hint": down["hint"],
            }
        assert time.monotonic() - started < 15
        assert fake.seen.received == 0  # no session is spent while Redis cannot store it


def test_run_once_beside_a_live_daemon_refuses_in_one_line(
    served_tradovate: FakeTradovate, redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    env = daemon_env(served_tradovate, redis_server.url)
    start_daemon(env)
    client = redis_server.client()
    wait_for(lambda: all_live(client, all_names(served_tradovate), served_tradovate))
    sessions = sum(served_tradovate.seen.sessions_opened.values())
    once = start_daemon(env, "run", "--once")
    assert once.wait() == 1
    refused = once.event("daemon.once_refused")
    assert "holds the lease of" in refused["reason"]
    assert sum(served_tradovate.seen.sessions_opened.values()) == sessions


@pytest.mark.timeout(60)
def test_a_session_killed_at_tradovate_is_off_redis_within_one_probe_period(
    redis_server: RedisServer,
    tmp_path: Path,
    processes: Spawned,
    start_daemon: StartDaemon,
) -> None:
    """A token refused on /account/list more than a minute (here: a tenth of one, on a tenth
    of Tradovate's time) after it was issued is checked with one renewal; refused too, it is
    a closed session and its keys go within one probe period."""
    fake = FakeTradovate(token_lifetime_s=480).start()
    probe_s = 2.0
    env = daemon_env(fake, redis_server.url, ORCA_TOKEN_PROBE_INTERVAL=str(int(probe_s)))
    daemon = start_daemon(env)
    client = redis_server.client()
    names = all_names(fake)
    wait_for(lambda: all_live(client, names, fake), what="every key live")
    fresh_s = 60 * fake.time_scale
    live_at = time.monotonic()
    wait_for(lambda: time.monotonic() - live_at > fresh_s, what="tokens older than fresh ones")
    victim = fake.users["APEX_272045"]
    victim_names = [victim.name, *victim.accounts]
    dead = client.get(f"token:{victim.name}")
    assert fake.close_sessions(victim.name) == 1  # a third login elsewhere
    killed_at = time.monotonic()
    wait_for(
        lambda: dead not in client.mget([f"token:{n}" for n in victim_names]),
        timeout=probe_s + 3,
        what="the dead token off Redis",
    )
    assert time.monotonic() - killed_at <= probe_s + 2  # one probe period, and the attempt
    refused = daemon.event("token.refused")
    assert refused["login"] == victim.name
    wait_for(lambda: all_live(client, names, fake), what="a new session's token everywhere")
    assert fake.seen.sessions_opened[victim.name] == 2
    assert all(fake.seen.sessions_opened[u] == 1 for u in fake.users if u != victim.name)

    # A reader's 401 for a live token spends nothing: checked, kept.
    renewals = sum(fake.seen.renewals.values())
    check = processes.start(
        env, "tokens", "refresh", victim.accounts[0], "--after-401", cwd=str(tmp_path)
    )
    assert check.wait() == 0, (check.stdout, check.lines[-3:])
    assert f"{victim.name}: kept" in "\n".join(check.stdout)
    assert sum(fake.seen.renewals.values()) == renewals
