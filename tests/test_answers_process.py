"""Tradovate's documented answers met by real daemon processes against the simulator on
loopback, and the four defects reproduced with such processes (issue 20): each test here failed
on the code before the fix."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.sim.environment import wait_for
from daemon.sim.observe import TokenSampler, all_live
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import (
    ACCOUNTS_PATH,
    AUTHORIZE_PATH,
    LOGIN_PATH,
    RENEW_PATH,
    FakeTradovate,
    numbered_desk,
)
from tests.helpers import Run, Spawned, StartDaemon, daemon_env, status_json, user

SIGNALS = [signal.SIGTERM, signal.SIGINT]
KINDS = ("token", "mdtoken")


def all_names_of(fake: FakeTradovate, login: str) -> list[str]:
    return [login, *fake.users[login].accounts]


def login_requests(fake: FakeTradovate, name: str) -> int:
    return sum(1 for body in fake.seen.login_bodies if body.get("name") == name)


@pytest.mark.long
def test_a_login_whose_account_list_answers_401_keeps_one_session_for_an_hour(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """A live token whose /account/list is refused (the key's scope, a device id) keeps its
    one session and a valid key through two hours of simulated time (36 s at this
    time-scale), renewed on schedule; the other login is untouched."""
    with FakeTradovate([user("APEX_1", 2), user("APEX_2", 1)], token_lifetime_s=24) as fake:
        fake.users["APEX_1"].accounts_denied = True
        daemon = start_daemon(daemon_env(fake, redis_server.url, ORCA_TOKEN_PROBE_INTERVAL="2"))
        client = redis_server.client()
        wait_for(lambda: all_live(client, ["APEX_1", "APEX_2"], fake), what="both tokens live")
        sampler = TokenSampler(redis_server.client, ["APEX_1"], fake.is_live, every_s=0.2).start()
        hours_end = time.monotonic() + 2 * fake.budget_window_s
        wait_for(lambda: time.monotonic() > hours_end, timeout=60, what="two simulated hours")
        samples = sampler.stop()
        assert (samples.stale, samples.missing) == (0, 0), samples
        assert samples.taken > 100
        assert fake.seen.sessions_opened["APEX_1"] == 1
        assert fake.seen.renewals["APEX_1"] >= 1
        denied = daemon.event("accounts.denied")
        assert denied["login"] == "APEX_1"
        assert "device id" in denied["hint"]


def test_a_locked_and_a_closed_login_cost_one_attempt_each_and_say_why(
    redis_server: RedisServer, start_daemon: StartDaemon, cli: Callable[[dict[str, str]], Run]
) -> None:
    users = [user("APEX_1"), user("APEX_2"), user("APEX_3")]
    users[0].status, users[1].status = "TemporaryLocked", "Closed"
    with FakeTradovate(users) as fake:
        env = daemon_env(fake, redis_server.url, ORCA_TOKEN_PROBE_INTERVAL="1")
        start_daemon(env)
        run = cli(env)

        def said() -> dict[str, dict[str, object]] | None:
            rows = {row["login"]: row for row in status_json(run)["logins"]}
            outcomes = [rows[n]["last_outcome"] for n in ("APEX_1", "APEX_2", "APEX_3")]
            return rows if outcomes == ["locked", "closed", "login"] else None

        rows = wait_for(said, timeout=20, what="each login's own reason in status")
        assert rows["APEX_1"]["state"] == "parked"
        assert "TemporaryLocked" in str(rows["APEX_1"]["last_error"])
        assert "Closed" in str(rows["APEX_2"]["last_error"])
        seen_at = len(fake.seen.requests)
        wait_for(lambda: len(fake.seen.requests) > seen_at + 2, timeout=10, what="account checks")
        assert [login_requests(fake, n) for n in ("APEX_1", "APEX_2", "APEX_3")] == [1, 1, 1]


def test_a_423_costs_one_attempt_and_stops_the_groups_logins(
    redis_server: RedisServer, start_daemon: StartDaemon, cli: Callable[[dict[str, str]], Run]
) -> None:
    with FakeTradovate([user("APEX_1"), user("APEX_2")], token_lifetime_s=480) as fake:
        env = daemon_env(fake, redis_server.url, ORCA_TOKEN_PROBE_INTERVAL="1")
        daemon = start_daemon(env)
        client = redis_server.client()
        wait_for(lambda: all_live(client, ["APEX_1", "APEX_2"], fake), what="both live")
        older_than_fresh = time.monotonic() + 60 * fake.time_scale
        wait_for(lambda: time.monotonic() > older_than_fresh, what="older tokens")
        fake.inject(LOGIN_PATH, "http_423", count=10)
        fake.close_sessions("APEX_1")  # its next login meets the 423
        run = cli(env)

        def lockout() -> bool:
            rows = {row["login"]: row for row in status_json(run)["logins"]}
            return bool(rows["APEX_1"]["last_outcome"] == "lockout")

        wait_for(lockout, timeout=20, what="APEX_1 named lockout in status")
        fake.close_sessions("APEX_2")  # it needs a login too, but the group may not send one
        deferred = daemon.event("budget.login_deferred", timeout=15)
        assert deferred["login"] == "APEX_2"
        assert deferred["wait_s"] > 3_000 * fake.time_scale  # the rest of Tradovate's hour
        assert login_requests(fake, "APEX_1") == 2  # the first login, then the 423
        assert login_requests(fake, "APEX_2") == 1
        assert client.get("token:APEX_2") is None  # its dead token is off Redis all the same
        rows = {row["login"]: row for row in status_json(run)["logins"]}
        assert rows["APEX_2"]["token"] == "missing"
        assert rows["APEX_2"]["last_outcome"] == "deferred"
        assert "failed-login budget (or a lockout) holds the login" in rows["APEX_2"]["last_error"]


def test_a_captcha_on_renewals_costs_at_most_two(
    redis_server: RedisServer, start_daemon: StartDaemon, cli: Callable[[dict[str, str]], Run]
) -> None:
    with FakeTradovate(numbered_desk(4, 1)) as fake:
        env = daemon_env(fake, redis_server.url)
        start_daemon(env)
        client = redis_server.client()
        names = list(fake.users)
        wait_for(lambda: all_live(client, names, fake), what="every token live")
        fake.inject(RENEW_PATH, "captcha", count=100)
        code, out, _ = cli(env)("tokens", "refresh")  # every login asked to renew now
        assert code == 1
        asked = [p for p, _ in fake.seen.requests].count(RENEW_PATH)
        assert 1 <= asked <= 2, out
        assert all_live(client, names, fake)  # `wait` logins keep the tokens they hold


def test_one_users_429_never_delays_anothers_login(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    with FakeTradovate([user("APEX_1"), user("APEX_2")], token_lifetime_s=480) as fake:
        fake.inject(LOGIN_PATH, "http_429", user="APEX_1")
        daemon = start_daemon(daemon_env(fake, redis_server.url, ORCA_TOKEN_PROBE_INTERVAL="1"))
        client = redis_server.client()
        wait_for(lambda: all_live(client, ["APEX_2"], fake), what="APEX_2 live")
        assert daemon.event("token.refresh_failed")["outcome"] == "rate_limited"
        older_than_fresh = time.monotonic() + 60 * fake.time_scale
        wait_for(lambda: time.monotonic() > older_than_fresh, what="an older token")
        fake.close_sessions("APEX_2")
        wait_for(
            lambda: fake.seen.sessions_opened["APEX_2"] == 2 and all_live(client, ["APEX_2"], fake),
            timeout=8,
            what="APEX_2 logged in again at once",
        )
        assert login_requests(fake, "APEX_1") == 1


@pytest.mark.long
def test_mdtoken_is_valid_in_every_sample_over_renewals_without_md_tokens(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    with FakeTradovate([user("APEX_1", 2)], token_lifetime_s=12) as fake:
        start_daemon(daemon_env(fake, redis_server.url))
        client = redis_server.client()
        names = ["APEX_1", "APEX_1-ACC1", "APEX_1-ACC2"]
        wait_for(lambda: all_live(client, names, fake), what="every key live")
        bad, taken = 0, 0
        ends = time.monotonic() + 30  # about three renewals
        while time.monotonic() < ends:
            for value in client.mget([f"mdtoken:{n}" for n in names]):
                taken += 1
                bad += 0 if isinstance(value, str) and fake.is_live(value) else 1
            time.sleep(0.05)
        assert fake.seen.renewals["APEX_1"] >= 2
        assert (bad, taken > 500) == (0, True)


def test_no_tradovate_request_starts_after_a_stop_signal(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """Defect: 40 logins, concurrency 2, 0.4 s latency, SIGTERM while account lists are in
    flight: account lists arrived 0.37 s after the signal."""
    with FakeTradovate(numbered_desk(40, 1), latency_s=0.4) as fake:
        env = daemon_env(fake, redis_server.url, ORCA_REFRESH_CONCURRENCY="2")
        daemon = start_daemon(env)
        wait_for(
            lambda: any(path == ACCOUNTS_PATH for _, path in list(fake.seen.arrivals)),
            timeout=20,
            what="the first account list",
        )
        arrived = len(fake.seen.arrivals)
        wait_for(  # a login just sent: its account list would follow after the signal
            lambda: any(path == LOGIN_PATH for _, path in list(fake.seen.arrivals)[arrived:]),
            timeout=20,
            what="a login in flight",
        )
        signalled = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=12) == 0
        late = [(round(at - signalled, 3), path) for at, path in fake.seen.arrivals]
        assert [item for item in late if item[0] > 0.05] == []


@pytest.mark.parametrize("signum", SIGNALS)
@pytest.mark.parametrize("verb", [("run", "--once"), ("tokens", "refresh")])
def test_one_off_verbs_stop_within_two_seconds_of_a_signal_whatever_tradovate_does(
    redis_server: RedisServer,
    processes: Spawned,
    tmp_path: Path,
    verb: tuple[str, ...],
    signum: signal.Signals,
) -> None:
    """Defect: an answer dripping a byte every 0.5 s with ORCA_TRADOVATE_TIMEOUT=60 kept
    `run --once` running 10 s after SIGTERM and after SIGINT."""
    with FakeTradovate([user("APEX_1")]) as fake:
        fake.inject(LOGIN_PATH, "drip", count=5, hang_s=0.5)
        env = daemon_env(fake, redis_server.url, ORCA_TRADOVATE_TIMEOUT="60")
        one_off = processes.start(env, *verb, cwd=str(tmp_path))
        wait_for(lambda: fake.seen.received >= 1, timeout=15, what="a login in flight")
        signalled = time.monotonic()
        one_off.signal(signum)
        assert one_off.wait(timeout=10) == 1
        assert time.monotonic() - signalled < 2.0


def test_an_operators_refresh_tries_a_rejected_login_at_once(
    redis_server: RedisServer, start_daemon: StartDaemon, cli: Callable[[dict[str, str]], Run]
) -> None:
    """Defect: the password fixed at Tradovate, `tokens refresh NAME` tried nothing until the
    back-off ended and `status` stayed at exit 1."""
    with FakeTradovate([user("APEX_1"), user("APEX_2")]) as fake:
        env = daemon_env(fake, redis_server.url)
        fake.users["APEX_1"].password = "changed-at-tradovate"
        start_daemon(env)
        run = cli(env)
        wait_for(lambda: status_json(run)["code"] == 1 and _rejected(run), what="a rejection")
        fake.users["APEX_1"].password = env["TRADOVATE_PASSWORD_APEX_1"]  # fixed there
        code, out, _ = run("tokens", "refresh", "APEX_1")
        assert (code, "✅ APEX_1: login" in out) == (0, True), out
        assert status_json(run)["code"] == 0
        assert login_requests(fake, "APEX_1") == 2


def _rejected(run: Run) -> bool:
    rows = {row["login"]: row for row in status_json(run)["logins"]}
    return bool(rows["APEX_1"]["last_outcome"] == "rejected")


def test_a_tradingview_login_meets_423_and_429_on_authorize_like_the_api(
    redis_server: RedisServer, start_daemon: StartDaemon, cli: Callable[[dict[str, str]], Run]
) -> None:
    with FakeTradovate([user("APEX_1"), user("APEX_2")]) as fake:
        fake.inject(AUTHORIZE_PATH, "http_429", user="APEX_1")
        env = daemon_env(fake, redis_server.url, route="tradingview")
        start_daemon(env)
        run = cli(env)

        def named() -> bool:
            rows = {row["login"]: row for row in status_json(run)["logins"]}
            return (rows["APEX_1"]["last_outcome"], rows["APEX_2"]["token"]) == (
                "rate_limited",
                "valid",
            )

        wait_for(named, timeout=20, what="APEX_1 rate limited, APEX_2 valid")
        authorize = [status for path, status in fake.seen.requests if path == AUTHORIZE_PATH]
        assert sorted(authorize) == [200, 429]  # one each: APEX_1 waits its hour alone


@pytest.mark.long
def test_a_wait_login_never_logs_in_again_while_the_budget_cannot_renew_it(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """Defect: 20 logins, short tokens, Tradovate's real 15 renewals per rolling hour: the
    `wait` logins whose renewals did not fit opened 2-3 new sessions each once their tokens
    lapsed. Now they stay out (parked, said) until the budget has room for their renewals."""
    with FakeTradovate(numbered_desk(20, 1), token_lifetime_s=24, budget_window_s=3_600) as fake:
        env = daemon_env(fake, redis_server.url, ORCA_AUTH_RATE_LIMIT="1000")
        daemon = start_daemon(env)
        client = redis_server.client()
        names = list(fake.users)
        wait_for(lambda: all_live(client, names, fake), timeout=20, what="every token live")
        first_round_ends = time.monotonic() + 2 * 24
        wait_for(lambda: time.monotonic() > first_round_ends, timeout=60, what="two lifetimes")
        assert sum(fake.seen.penalties.values()) == 0
        assert sum(fake.seen.renewals.values()) <= 14  # Tradovate's 15 less the reserve
        assert daemon.event("budget.short")["hint"].endswith("another /24 subnet")
        again = {name: n for name, n in fake.seen.sessions_opened.items() if n > 1}
        assert again == {}


def test_a_closed_sessions_keys_are_missing_only_while_its_login_is_asked(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """The account check finds the token refused and the renewal that confirms it is refused
    too: the keys go, and the login follows in the same attempt, opening one session. The keys
    are missing no longer than that login (and its new session's account list) plus 0.5 s."""
    with FakeTradovate([user("APEX_1", accounts=5), user("APEX_2")], token_lifetime_s=480) as fake:
        env = daemon_env(fake, redis_server.url, ORCA_TOKEN_PROBE_INTERVAL="1")
        daemon = start_daemon(env)
        client = redis_server.client()
        keys = [f"{kind}:{name}" for name in all_names_of(fake, "APEX_1") for kind in KINDS]
        wait_for(lambda: all_live(client, ["APEX_1", "APEX_2"], fake), what="both live")
        older_than_fresh = time.monotonic() + 60 * fake.time_scale
        wait_for(lambda: time.monotonic() > older_than_fresh, what="older tokens")
        missing: list[float] = []
        arrivals_at = len(fake.seen.arrivals)
        assert fake.close_sessions("APEX_1") == 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # as fast as one client reads: about 0.2 ms apart
            if None in client.mget(keys):
                missing.append(time.monotonic())
            elif missing:
                break
        assert missing, "the closed session's keys never went"
        assert all_live(client, ["APEX_1"], fake)
        gap_s = missing[-1] - missing[0]
        after = [(at, path) for at, path in fake.seen.arrivals[arrivals_at:]]
        login_at = next(at for at, path in after if path == LOGIN_PATH)
        listed_at = next(at for at, path in after if path == ACCOUNTS_PATH and at > login_at)
        assert gap_s <= (listed_at - login_at) + 0.5, (gap_s, listed_at - login_at)
        assert fake.seen.sessions_opened["APEX_1"] == 2
        assert login_requests(fake, "APEX_1") == 2
        refused = daemon.event("token.refused")
        assert refused["keys_deleted"] == 12
