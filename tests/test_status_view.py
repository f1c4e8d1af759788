"""`orca-tokens status` and `health` in words, against a running daemon with one bad password."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import fakeredis

from daemon.config import password_variable
from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate
from daemon.store.heartbeat import Heartbeat, write_heartbeat
from daemon.store.lease import LoginLeases
from daemon.views.status import render_status, status_report
from tests.helpers import (
    FakeClock,
    Run,
    Spawned,
    build_world,
    daemon_env,
    status_json,
    tradovate_routes,
    user,
)


def test_status_names_each_login_and_a_rejected_password(
    served_tradovate: FakeTradovate,
    redis_server: RedisServer,
    tmp_path: Path,
    processes: Spawned,
    cli: Callable[[dict[str, str]], Run],
) -> None:
    env = daemon_env(served_tradovate, redis_server.url)
    env[password_variable("APEX_136189")] = "not-the-password"
    daemon = processes.start(env, cwd=str(tmp_path))
    daemon.event("token.refresh_failed")
    run = cli({k: v for k, v in env.items() if not k.startswith("TRADOVATE_PASSWORD")})

    found = wait_for(
        lambda: (
            (r := status_json(run))
            and sum(row["token"] == "valid" for row in r["logins"]) == 3
            and r
        ),
        what="three valid logins",
    )
    assert found["code"] == 1
    rows = {row["login"]: row for row in found["logins"]}
    bad = rows["APEX_136189"]
    assert (bad["token"], bad["state"], bad["last_outcome"]) == ("missing", "failing", "rejected")
    assert "Incorrect username or password" in bad["last_error"]
    good = rows["APEX_266668"]
    assert (good["state"], good["accounts"]) == ("ok", 4)
    assert good["owner"].startswith(f"{good['owner'].split(':')[0]}:{daemon.process.pid}:")
    assert good["heartbeat_age_s"] < 5
    assert "APEX_136189 missing (" in str(found["summary"])

    code, out, _ = run("status")
    assert code == 1
    assert "APEX_136189" in out
    assert "rejected: " in out
    assert "(in " in out  # expiry and next refresh said as "in N min"
    code, out, _ = run("health")
    assert code == 1
    assert out.startswith("not ready: 3 of 4 logins have a valid token: APEX_136189 missing")
    assert "not-the-password" not in out


def test_status_without_a_daemon_exits_3(
    redis_server: RedisServer, cli: Callable[[dict[str, str]], Run]
) -> None:
    code, out, _ = cli({"REDIS_URL": redis_server.url, "ORCA_ACCOUNTS": "APEX_1"})("status")
    assert code == 3
    assert "no daemon is running" in out


def test_status_watch_redraws_until_interrupted(
    served_tradovate: FakeTradovate,
    redis_server: RedisServer,
    tmp_path: Path,
    processes: Spawned,
) -> None:
    import signal

    env = daemon_env(served_tradovate, redis_server.url)
    processes.start(env, cwd=str(tmp_path)).event("token.refreshed")
    watch = processes.start(env, "status", "--watch", cwd=str(tmp_path))
    wait_for(
        lambda: sum("logins have a valid token" in line for line in watch.stdout) >= 2,
        what="two redraws",
    )
    assert any("\x1b[2J" in line for line in watch.stdout)  # the screen is cleared each time
    watch.signal(signal.SIGINT)
    assert watch.wait(timeout=10) in (0, 1)


def test_status_shows_each_logins_owner_and_each_instances_address_and_budget() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    for n, logins in ((1, ["APEX_1"]), (2, ["APEX_2"])):
        instance = f"host:{n}:aaaa"
        LoginLeases(client, instance).take(logins)
        write_heartbeat(
            client,
            Heartbeat(
                instance,
                n,
                None,
                0.0,
                3,
                owned=1,
                protocol=2,
                group=f"address-{n}",
                address=f"127.0.0.{n}",
                renew_usable=14,
                keeps_alive=15,
            ),
        )
    report = status_report(client, ["APEX_1", "APEX_2", "APEX_3"], now=0.0)
    assert [row.owner for row in report.logins] == ["host:1:aaaa", "host:2:aaaa", None]
    text = render_status(report)
    assert "host:2:aaaa (0 s ago)" in text
    assert "- (no lease)" in text
    assert "host:1:aaaa  127.0.0.1  address-1  14/h, keeps 15  1     protocol 2" in text
    assert "2 instance(s) alive, 2 refreshing" in text
    assert report.as_dict()["instances"][1]["address"] == "127.0.0.2"


def test_status_watch_stops_on_sigint_even_started_with_sigint_ignored(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A script's background job starts with SIGINT ignored (no KeyboardInterrupt in Python):
    `status --watch` still stops on it, as on SIGTERM."""
    import os
    import signal
    import subprocess
    import sys

    env = {"PATH": os.environ["PATH"], "REDIS_URL": redis_server.url, "ORCA_ACCOUNTS": "APEX_1"}
    watch = subprocess.Popen(
        [sys.executable, "-m", "daemon", "status", "--watch"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().endswith("OWNER\n")  # the first table is drawn
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 3  # the last report's code: no live daemon
    finally:
        watch.kill()
        watch.wait()


def test_status_shows_every_note_in_words_and_json_and_drops_one_no_longer_current() -> None:
    """A password expiring in 3 days with Tradovate's hint, accounts the list refuses to a live
    token (API key scope), an account another login writes: each on the line under the login's
    row in a word or two, each sentence in `status --json`; a renewal whose answer no longer
    says it drops it."""
    clock = FakeClock()
    fake = FakeTradovate(
        [user("APEX_1", accounts=2), user("APEX_2", accounts=1), user("APEX_3")],
        token_lifetime_s=4_800,
        clock=clock,
    )
    first = fake.users["APEX_1"]
    first.password_expires_at = clock.now + 3 * 86_400
    first.hibp_hint = "EmailAndPasswordCompromised"
    fake.users["APEX_3"].accounts_denied = True
    fake.users["APEX_2"].accounts.append("APEX_1-ACC2")  # listed by both: APEX_1 writes it
    with tradovate_routes(fake):
        world = build_world(fake, clock)
        for login in ("APEX_1", "APEX_2", "APEX_3"):
            assert world.refresher.refresh(login).ok
        report = status_report(world.redis, ["APEX_1", "APEX_2", "APEX_3"], now=clock.now)
        text = render_status(report)
        expires = time.strftime("%m-%d", time.gmtime(first.password_expires_at))
        lines = text.splitlines()
        row_at = next(n for n, line in enumerate(lines) if line.startswith("APEX_1 "))
        under_first = lines[row_at + 1]
        assert under_first.startswith("  └ ")
        assert f"password expires {expires}, hint EmailAndPasswordCompromised" in under_first
        assert "  └ accounts not listed" in text
        assert "APEX_1-ACC2 skipped (written by APEX_1)" in text
        notes = {row["login"]: list(row["notes"]) for row in report.as_dict()["logins"]}
        assert any("EmailAndPasswordCompromised" in n for n in notes["APEX_1"])
        assert notes["APEX_2"] == ["APEX_1-ACC2 is written by APEX_1"]
        assert "API key scope" in notes["APEX_3"][0]

        first.password_expires_at, first.hibp_hint = None, None
        assert world.refresher.refresh("APEX_1", force=True).outcome == "renew"
        report = status_report(world.redis, ["APEX_1", "APEX_2"], now=clock.now)
        assert report.logins[0].notes == ()
        assert "password" not in render_status(report)
