"""The TradingView route (SPEC, "Two ways to log in"): a login with only a name and a password,
answered as Tradovate's `/authorize` answers, then renewed like any token."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from daemon.config import Login, Secret
from daemon.logs import fingerprint
from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import AUTHORIZE_PATH, FakeTradovate
from daemon.tradovate import (
    CaptchaRequired,
    CredentialsRejected,
    InvalidResponse,
    PenaltyTicket,
    TradovateClient,
)
from daemon.tradovate.tradingview import NotEntitled
from tests.helpers import (
    FakeClock,
    Run,
    StartDaemon,
    build_world,
    daemon_env,
    make_jwt,
    refreshing_for,
    settings_for,
    status_json,
    tradovate_routes,
    user,
)

TV = "tradingview"


@pytest.fixture
def fake() -> Iterator[FakeTradovate]:
    fake = FakeTradovate([user("APEX_1", accounts=2), user("APEX_2", accounts=1)])
    with tradovate_routes(fake):
        yield fake


def tv_client(fake: FakeTradovate) -> tuple[TradovateClient, Login]:
    settings = settings_for(fake, route=TV)
    assert settings.tradovate.sec is None  # no API key anywhere
    return TradovateClient(settings.tradovate), settings.logins[0]


def test_a_name_and_a_password_log_in_with_no_api_key(fake: FakeTradovate) -> None:
    client, login = tv_client(fake)
    grant = client.login(login)
    assert fake.user_of(grant.access_token) == "APEX_1"
    assert grant.expires_at == fake.expiry_of(grant.access_token)
    # Until a renewal brings an md token, the access token serves the market-data socket.
    assert grant.md_access_token == grant.access_token
    assert fake.seen.authorizations["APEX_1"] == 1
    assert fake.seen.sessions_opened["APEX_1"] == 1
    assert fake.seen.login_bodies == []  # accesstokenrequest was never called
    renewed = client.renew(grant.access_token)  # the official renewal takes the token
    assert fake.user_of(renewed.access_token) == "APEX_1"
    assert [a.name for a in client.list_accounts(renewed.access_token)] == [
        "APEX_1-ACC1",
        "APEX_1-ACC2",
    ]


def answered(body: object, status: int = 200) -> respx.MockRouter:
    router = respx.mock(assert_all_called=True)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    router.post(url__regex=r"/authorize").mock(return_value=httpx.Response(status, content=content))
    return router


LOGIN = Login("APEX_1", Secret("pw-APEX_1-Zq9"), route=TV)


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        ({"s": "error", "errmsg": "Invalid login or password"}, CredentialsRejected, "Invalid"),
        (
            {"s": "error", "errmsg": "User is not entitled to TradingView"},
            NotEntitled,
            "TradingView add-on",
        ),
        ({"p-ticket": "t-1", "p-time": 3}, PenaltyTicket, "after 3 s"),
        ({"p-ticket": "t-2", "p-time": 0, "p-captcha": True}, CaptchaRequired, "captcha"),
        ({"s": "error", "errmsg": "Too many requests, slow down"}, PenaltyTicket, "after 15 s"),
        ({"d": {"access_token": "abc"}}, InvalidResponse, '"s": "ok"'),
        ({"s": "ok", "d": {"access_token": ""}}, InvalidResponse, "unusable"),
        ({"s": "ok", "d": {"access_token": "t", "expiration": 1e400}}, InvalidResponse, "no time"),
        ({"s": "ok", "d": {"access_token": "t", "expiration": "soon"}}, InvalidResponse, "no time"),
        (b"<html>maintenance</html>", InvalidResponse, "not JSON"),
        (b"[" * 2_000_000, InvalidResponse, "larger than 1000000 bytes"),
        (b"[" * 50_000 + b"]" * 50_000, InvalidResponse, "not JSON"),
        ({"s": "error", "errmsg": "x"}, CredentialsRejected, "HTTP 401"),
    ],
)
def test_every_authorize_answer_is_named(body: object, error: type[Exception], words: str) -> None:
    from daemon.config import TradovateSettings

    status = 401 if words == "HTTP 401" else 200
    client = TradovateClient(TradovateSettings(tv_base_url="https://tv.example.invalid"))
    with answered(body, status), pytest.raises(error) as raised:
        client.login(LOGIN)
    assert words in str(raised.value)
    assert "pw-APEX_1-Zq9" not in str(raised.value)


def test_the_first_lifetime_is_the_earlier_of_expiration_and_the_jwt_exp() -> None:
    from daemon.config import TradovateSettings

    now = time.time()
    client = TradovateClient(TradovateSettings(tv_base_url="https://tv.example.invalid"))
    for expiration, exp, expected in ((now + 600, now + 900, 600), (now + 900, now + 600, 600)):
        body = {"s": "ok", "d": {"access_token": make_jwt(exp), "expiration": expiration}}
        with answered(body):
            grant = client.login(LOGIN)
        assert grant.expires_at - now == pytest.approx(expected, abs=1)


def test_the_request_is_a_form_with_no_key_and_no_browser_headers() -> None:
    from daemon.config import TradovateSettings

    now = time.time()
    client = TradovateClient(TradovateSettings(tv_base_url="https://tv.example.invalid"))
    body = {"s": "ok", "d": {"access_token": make_jwt(now + 900), "expiration": now + 900}}
    with answered(body) as router:
        client.login(LOGIN)
        request = router.calls.last.request
    assert str(request.url) == "https://tv.example.invalid/authorize?locale=en"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith("orca-token-daemon/")
    assert not {"origin", "referer"} & set(request.headers)
    assert not any(name.startswith("sec-fetch") for name in request.headers)
    assert dict(httpx.QueryParams(request.content.decode())) == {
        "locale": "en",
        "login": "APEX_1",
        "password": "pw-APEX_1-Zq9",
    }


def test_a_tradingview_token_is_renewed_for_hours_never_logged_in_again() -> None:
    clock = FakeClock()
    fake = FakeTradovate([user("APEX_1", accounts=2)], token_lifetime_s=4_800, clock=clock)
    with tradovate_routes(fake):
        world = build_world(fake, clock, route=TV)
        for _ in range(6 * 12):  # six hours, five minutes at a time
            attempt = world.refresher.refresh("APEX_1")
            assert attempt.ok, attempt
            clock.advance(300)
            token = world.token("APEX_1")
            assert token is not None
            assert fake.is_live(token)
    assert fake.seen.authorizations["APEX_1"] == 1
    assert fake.seen.sessions_opened["APEX_1"] == 1
    assert fake.seen.renewals["APEX_1"] >= 4


def test_a_wrong_password_on_the_tradingview_route_spends_a_failed_login(
    fake: FakeTradovate,
) -> None:
    clock = FakeClock()
    world = build_world(fake, clock, route=TV, TRADOVATE_PASSWORD_APEX_1="not-it")
    attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome == "rejected"
    assert attempt.delay_s == 900  # the rejected-password ladder's first step
    assert len(fake.seen.failed_login_times) == 1
    status = json.loads(str(world.redis.get("orca:status:APEX_1")))
    assert "Incorrect username or password" in status["last_error"]


@pytest.mark.long
@pytest.mark.timeout(120)
def test_a_daemon_with_only_names_and_passwords_keeps_every_key_valid(
    redis_server: RedisServer, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    with FakeTradovate(token_lifetime_s=15) as served:
        env = daemon_env(served, redis_server.url, route=TV)
        assert not {"TRADOVATE_APP_ID", "TRADOVATE_CID", "TRADOVATE_SEC"} & set(env)
        daemon = start_daemon(env)
        client = redis_server.client()
        names = [n for u in served.users.values() for n in (u.name, *u.accounts)]

        def all_live() -> bool:
            values = client.mget([f"token:{n}" for n in names])
            md = client.mget([f"mdtoken:{u}" for u in served.users])
            return all(isinstance(v, str) and served.is_live(v) for v in [*values, *md])

        wait_for(all_live, what="every token and md token key live")
        wait_for(lambda: min(served.seen.renewals[u] for u in served.users) >= 2, timeout=60,
                 what="two renewals of every login")  # fmt: skip
        assert all_live()
        assert dict(served.seen.authorizations) == dict.fromkeys(served.users, 1)
        assert served.seen.login_bodies == []
        for headers in served.seen.authorize_headers:
            assert not {"origin", "referer"} & {h.lower() for h in headers}
        daemon.signal(15)
        assert daemon.wait() == 0
    assert served.seen.requests.count((AUTHORIZE_PATH, 200)) == len(served.users)


@pytest.mark.timeout(120)
def test_a_mixed_accounts_file_serves_both_routes_and_status_names_them(
    redis_server: RedisServer,
    start_daemon: StartDaemon,
    tmp_path: Path,
    cli: Callable[[dict[str, str]], Run],
) -> None:
    with FakeTradovate() as served:  # the reference desk
        names = list(served.users)
        routes = dict(zip(names, ("tradingview", "api", "tradingview", "api"), strict=True))
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(
            "".join(
                f'[[accounts]]\nname = "{n}"\npassword_env = "PW_{i}"\nlogin = "{routes[n]}"\n'
                for i, n in enumerate(names)
            )
        )
        env = daemon_env(
            served,
            redis_server.url,
            ORCA_ACCOUNTS_FILE=str(accounts),
            **{f"PW_{i}": served.users[n].password for i, n in enumerate(names)},
        )
        del env["ORCA_ACCOUNTS"]
        env["PW_2"] = "not-the-password"  # names[2], a TradingView login
        start_daemon(env)
        run = cli({k: v for k, v in env.items() if not k.startswith("PW_")})

        def settled() -> dict[str, Any] | None:
            found = status_json(run)
            rows = {row["login"]: row for row in found["logins"]}
            good = [n for n in names if n != names[2]]
            # Statuses and tokens are read apart: a token may be seen before its status.
            recorded = all(rows[n]["route"] for n in names)
            valid = all(rows[n]["token"] == "valid" for n in good)
            if recorded and valid and rows[names[2]]["last_error"]:
                return found
            return None

        found = wait_for(settled, timeout=30, what="three valid logins and one rejected")
    rows = {row["login"]: row for row in found["logins"]}
    assert {n: rows[n]["route"] for n in names} == routes, found
    assert found["code"] == 1
    assert "Incorrect username or password" in rows[names[2]]["last_error"]
    assert served.seen.authorizations[names[0]] == 1
    assert {body["name"] for body in served.seen.login_bodies} == {names[1], names[3]}


def test_a_token_another_program_wrote_is_named_once_an_hour_and_restored(
    fake: FakeTradovate,
) -> None:
    clock = FakeClock()
    refreshing = refreshing_for(settings_for(fake, route=TV), clock, monotonic=clock)
    world_redis = refreshing.keeper.redis
    assert refreshing.refresher.refresh("APEX_1").ok
    held = world_redis.get("token:APEX_1")
    foreign = make_jwt(clock.now + 3_600, sub="APEX_1")  # well formed, not this daemon's
    with capture_logs() as logs:
        for _ in range(3):
            world_redis.set("token:APEX_1", foreign)
            refreshing.keeper.reconcile()
            assert world_redis.get("token:APEX_1") == held  # restored every time
            clock.advance(60)
        clock.advance(3_600)
        world_redis.set("token:APEX_1", foreign)
        refreshing.keeper.reconcile()
    said = [e for e in logs if e["event"] == "token.foreign_writer"]
    assert len(said) == 2  # once, then again an hour later
    assert said[0]["login"] == "APEX_1"
    assert said[0]["fingerprint"] == fingerprint(foreign)
    assert foreign not in str(logs)


@pytest.mark.timeout(120)
def test_the_cut_over_from_the_seeds_scripts_as_written(
    redis_server: RedisServer, start_daemon: StartDaemon
) -> None:
    """docs/migrating.md, "Coming from the seed's scripts": its lines in order, against the
    simulator (its TradingView host standing in for tv-demo.tradovateapi.com)."""
    page = (Path(__file__).parent.parent / "docs" / "migrating.md").read_text(encoding="utf-8")
    section = page.split("# Coming from the seed's scripts", 1)[1].split("```sh\n", 1)[1]
    lines = section.split("```", 1)[0]
    assert "export TRADOVATE_LOGIN=tradingview ORCA_ACCOUNTS=APEX_266668" in lines
    with FakeTradovate() as served:
        password = served.users["APEX_266668"].password
        env = {
            **daemon_env(served, redis_server.url, route=TV),
            "ORCA_ACCOUNTS": "APEX_266668",  # the recipe's export lines
            "TRADOVATE_PASSWORD_APEX_266668": password,
        }
        assert "orca-tokens run --once" in lines
        assert start_daemon(env, "run", "--once").wait() == 0
        assert served.seen.authorizations["APEX_266668"] == 1
        assert "orca-tokens tokens refresh APEX_266668" in lines
        refresh = start_daemon(env, "tokens", "refresh", "APEX_266668")
        assert refresh.wait() == 0
        assert served.seen.renewals["APEX_266668"] == 1
        assert "$(orca-tokens tokens get APEX_266668)" in lines
        get = start_daemon(env, "tokens", "get", "APEX_266668")
        assert get.wait() == 0
        token = get.stdout[-1]
        assert '/accounts?locale=en"    # must answer {"s":"ok",...}' in lines
        answer = httpx.get(
            f"{served.tv_base_url}/accounts?locale=en",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert answer["s"] == "ok"
        assert [a["name"] for a in answer["d"]] == served.users["APEX_266668"].accounts
        assert all(a["id"].startswith("D") for a in answer["d"])
        assert served.seen.authorizations["APEX_266668"] == 1  # renewed, never logged in again


def test_a_lifetime_nobody_said_is_learnt_from_the_first_renewal_before_any_key() -> None:
    clock = FakeClock()
    fake = FakeTradovate(
        [user("APEX_1", accounts=1)], opaque_tokens=True, tv_expiration=False, clock=clock
    )
    with tradovate_routes(fake):
        world = build_world(fake, clock, route=TV)
        first = world.refresher.refresh("APEX_1")
        assert first.outcome == "deferred"  # logged in; renewing before any key is written
        assert world.token("APEX_1") is None
        status = json.loads(str(world.redis.get("orca:status:APEX_1")))
        assert status["last_error"] == "lifetime unknown, renewing"
        clock.advance(first.delay_s)
        second = world.refresher.refresh("APEX_1")
        assert second.outcome == "renew"
        token = world.token("APEX_1")
        assert token is not None
        expiry = fake.expiry_of(token)
        assert expiry is not None
        assert 0 < world.redis.ttl("token:APEX_1") <= expiry - clock.now
        status = json.loads(str(world.redis.get("orca:status:APEX_1")))
        assert status["last_error"] is None
    assert fake.seen.authorizations["APEX_1"] == 1
    assert fake.seen.renewals["APEX_1"] == 1
