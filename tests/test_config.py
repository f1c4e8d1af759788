from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import (
    ConfigError,
    Secret,
    load_redis_settings,
    load_settings,
    password_variable,
    read_environment,
)

BASE = {
    "TRADOVATE_APP_ID": "app",
    "TRADOVATE_CID": "12",
    "TRADOVATE_SEC": "the-sec-value",
    "ORCA_ACCOUNTS": "APEX_1,APEX_2",
    "TRADOVATE_PASSWORD_APEX_1": "pw-one-xyz",
    "TRADOVATE_PASSWORD_APEX_2": "pw-two-xyz",
}


def problems(env: dict[str, str], **kwargs: bool) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env, **kwargs)
    return caught.value.problems


def test_defaults_follow_spec() -> None:
    settings = load_settings(BASE)
    assert settings.redis.target() == "redis://localhost:6379/0"
    assert settings.redis.max_connections == 10
    assert settings.redis.socket_connect_timeout_s == 5
    assert settings.redis.ssl_cert_reqs == "required"
    assert settings.tradovate.env == "demo"
    assert settings.tradovate.base_url == "https://demo.tradovateapi.com/v1"
    assert settings.tradovate.cid == 12
    assert settings.token_ttl_s == 18_000
    assert settings.refresh_interval_s == 3_600
    assert settings.auth_rate_limit == 10
    assert settings.health_addr == ("127.0.0.1", 9108)
    assert (settings.log_format, settings.log_level) == ("auto", "info")
    assert [login.name for login in settings.logins] == ["APEX_1", "APEX_2"]
    assert settings.logins[0].password == Secret("pw-one-xyz")


def test_live_environment_picks_the_live_url() -> None:
    settings = load_settings({**BASE, "TRADOVATE_ENV": "live"})
    assert settings.tradovate.base_url == "https://live.tradovateapi.com/v1"
    custom = load_settings({**BASE, "TRADOVATE_BASE_URL": "http://127.0.0.1:9/v1/"})
    assert custom.tradovate.base_url == "http://127.0.0.1:9/v1"


def test_repr_masks_every_secret() -> None:
    env = {**BASE, "REDIS_PASSWORD": "redis-pw-123", "REDIS_URL": "rediss://u:url-pw-9@h:6380/0"}
    text = repr(load_settings(env))
    for secret in ("pw-one-xyz", "pw-two-xyz", "the-sec-value", "redis-pw-123", "url-pw-9"):
        assert secret not in text
    assert "Secret('********')" in text


def test_secrets_lists_values_for_the_redactor_but_not_a_passwordless_url() -> None:
    with_password = load_settings({**BASE, "REDIS_URL": "rediss://u:url-pw-9@h:6380/0"})
    assert "url-pw-9" in with_password.secrets()
    plain = load_settings({**BASE, "REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert not any("127.0.0.1" in value for value in plain.secrets())


def test_redis_target_never_shows_the_password() -> None:
    settings = load_redis_settings({"REDIS_URL": "rediss://orca:hunter22@cache.example:6380/2"})
    assert settings.target() == "rediss://orca@cache.example:6380/2"
    assert settings.uses_tls
    fields = load_redis_settings(
        {"REDIS_HOST": "h", "REDIS_PORT": "6380", "REDIS_SSL": "true", "REDIS_PASSWORD": "x1"}
    )
    assert fields.target() == "rediss://h:6380/0"


def test_every_bad_setting_is_reported_at_once() -> None:
    env = {
        **BASE,
        "REDIS_PORT": "eighty",
        "REDIS_SSL": "maybe",
        "REDIS_SSL_CERT_REQS": "optional",
        "REDIS_MAX_CONNECTIONS": "0",
        "TRADOVATE_ENV": "paper",
        "TRADOVATE_CID": "abc",
        "ORCA_TOKEN_TTL": "-5",
        "ORCA_HEALTH_ADDR": "nowhere",
        "ORCA_LOG_FORMAT": "xml",
    }
    found = problems(env)
    for name in (
        "REDIS_PORT",
        "REDIS_SSL",
        "REDIS_SSL_CERT_REQS",
        "REDIS_MAX_CONNECTIONS",
        "TRADOVATE_ENV",
        "TRADOVATE_CID",
        "ORCA_TOKEN_TTL",
        "ORCA_HEALTH_ADDR",
        "ORCA_LOG_FORMAT",
    ):
        assert any(p.startswith(f"{name}:") for p in found), (name, found)
    assert "'eighty' is not an integer" in " ".join(found)


API_KEY_NEEDED = "is not set (a login uses the api route: or set TRADOVATE_LOGIN=tradingview)"


def test_missing_credentials_are_named() -> None:
    found = problems({"ORCA_ACCOUNTS": "APEX_1"})
    assert f"TRADOVATE_APP_ID: {API_KEY_NEEDED}" in found
    assert f"TRADOVATE_CID: {API_KEY_NEEDED}" in found
    assert f"TRADOVATE_SEC: {API_KEY_NEEDED}" in found
    assert "TRADOVATE_PASSWORD_APEX_1: is not set" in found


def test_the_tradingview_route_needs_only_names_and_passwords() -> None:
    settings = load_settings(
        {
            "ORCA_ACCOUNTS": "APEX_1,APEX_2",
            "TRADOVATE_LOGIN": "tradingview",
            "TRADOVATE_PASSWORD_APEX_1": "pw-1",
            "TRADOVATE_PASSWORD_APEX_2": "pw-2",
        }
    )
    assert [login.route for login in settings.logins] == ["tradingview", "tradingview"]
    assert settings.tradovate.sec is None
    assert settings.tradovate.tv_base_url == "https://tv-demo.tradovateapi.com"
    live = load_settings(
        {
            "ORCA_ACCOUNTS": "APEX_1",
            "TRADOVATE_LOGIN": "tradingview",
            "TRADOVATE_ENV": "live",
            "TRADOVATE_PASSWORD_APEX_1": "pw-1",
        }
    )
    assert live.tradovate.tv_base_url == "https://tv-live.tradovateapi.com"


def test_a_mixed_accounts_file_needs_the_api_key_for_its_api_logins(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[[accounts]]\nname = "APEX_1"\npassword_env = "PW_1"\nlogin = "tradingview"\n'
        '[[accounts]]\nname = "APEX_2"\npassword_env = "PW_2"\n'
    )
    env = {"ORCA_ACCOUNTS_FILE": str(accounts), "PW_1": "a", "PW_2": "b"}
    assert problems(env) == [
        f"TRADOVATE_APP_ID: {API_KEY_NEEDED}",
        f"TRADOVATE_CID: {API_KEY_NEEDED}",
        f"TRADOVATE_SEC: {API_KEY_NEEDED}",
    ]
    with_key = {**env, "TRADOVATE_APP_ID": "app", "TRADOVATE_CID": "7", "TRADOVATE_SEC": "s"}
    routes = {login.name: login.route for login in load_settings(with_key).logins}
    assert routes == {"APEX_1": "tradingview", "APEX_2": "api"}
    only_tv = {**env, "TRADOVATE_LOGIN": "tradingview"}  # APEX_2 follows TRADOVATE_LOGIN
    assert {login.route for login in load_settings(only_tv).logins} == {"tradingview"}


def test_an_unknown_route_is_named(tmp_path: Path) -> None:
    assert problems({"ORCA_ACCOUNTS": "APEX_1", "TRADOVATE_LOGIN": "browser"})[0] == (
        "TRADOVATE_LOGIN: 'browser' is not one of api, tradingview"
    )
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[[accounts]]\nname = "APEX_1"\npassword_env = "PW_1"\nlogin = "web"\n')
    found = problems({"ORCA_ACCOUNTS_FILE": str(accounts), "PW_1": "a"})
    assert f"{accounts} [[accounts]] #1: login must be one of api, tradingview" in found


def test_operator_commands_need_no_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({}, credentials=False)
    assert settings.logins == ()
    names_only = load_settings({"ORCA_ACCOUNTS": "APEX_1"}, credentials=False)
    assert names_only.logins[0].password is None


def test_no_logins_at_all_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {k: v for k, v in BASE.items() if k != "ORCA_ACCOUNTS"}
    assert problems(env) == [
        "ORCA_ACCOUNTS_FILE: config/accounts.toml does not exist (or set ORCA_ACCOUNTS)"
    ]
    assert problems({**BASE, "ORCA_ACCOUNTS": " , "}) == ["ORCA_ACCOUNTS: lists no logins"]


def test_bad_redis_url_is_named_without_quoting_it() -> None:
    found = problems({**BASE, "REDIS_URL": "http://user:sup3r-secret@host"})
    assert found == ["REDIS_URL: must start with redis:// or rediss://"]


def test_missing_ca_bundle_is_named() -> None:
    found = problems({**BASE, "REDIS_SSL_CA_CERTS": "/nonexistent/ca.pem"})
    assert found == ["REDIS_SSL_CA_CERTS: /nonexistent/ca.pem does not exist"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),  # noqa: S104 (parsing, not binding)
        ("[::1]:9200", ("::1", 9200)),
        ("", None),
    ],
)
def test_health_addr(raw: str, expected: tuple[str, int] | None) -> None:
    assert load_settings({**BASE, "ORCA_HEALTH_ADDR": raw}).health_addr == expected


def write_accounts(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    env = {k: v for k, v in BASE.items() if k != "ORCA_ACCOUNTS"}
    return {**env, "ORCA_ACCOUNTS_FILE": str(path)}


def test_accounts_file_with_env_and_file_passwords(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "apex_2").write_text("pw-from-file\n")
    env = write_accounts(
        tmp_path,
        """
        [[accounts]]
        name = "APEX_1"
        password_env = "APEX_1_PASSWORD"

        [[accounts]]
        name = "APEX_2"
        password_file = "apex_2"
        """,
    )
    env.update(APEX_1_PASSWORD="pw-from-env", CREDENTIALS_DIRECTORY=str(creds))
    logins = load_settings(env).logins
    assert [(lg.name, lg.password) for lg in logins] == [
        ("APEX_1", Secret("pw-from-env")),
        ("APEX_2", Secret("pw-from-file")),
    ]


def test_accounts_file_problems_are_all_named(tmp_path: Path) -> None:
    env = write_accounts(
        tmp_path,
        """
        [[accounts]]
        name = "APEX_1"
        password = "never-here"
        password_env = "P1"

        [[accounts]]
        name = "APEX_2"

        [[accounts]]
        name = "APEX_1"
        password_env = "P1"

        [[accounts]]
        name = "bad name!"
        password_env = "P1"

        [[accounts]]
        name = "APEX_3"
        password_file = "/nonexistent/apex_3"
        typo = 1
        """,
    )
    text = " | ".join(problems(env))
    assert "passwords never live in this file" in text
    assert "never-here" not in text
    assert "APEX_2 needs exactly one of password_env or password_file" in text
    assert "login APEX_1 is listed twice" in text
    assert "login name 'bad name!' is not a Tradovate user name" in text
    assert "unknown keys typo" in text
    assert "cannot read /nonexistent/apex_3" in text
    assert "P1: is not set" in text


def test_accounts_file_that_is_not_toml(tmp_path: Path) -> None:
    env = write_accounts(tmp_path, "[[accounts]\nname = ")
    (found,) = problems(env)
    assert found.startswith("ORCA_ACCOUNTS_FILE: ")
    assert "is not valid TOML" in found


def test_empty_password_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    env = {**BASE, "TRADOVATE_PASSWORD_APEX_1_FILE": str(tmp_path / "empty")}
    del env["TRADOVATE_PASSWORD_APEX_1"]
    assert problems(env) == [f"TRADOVATE_PASSWORD_APEX_1_FILE: {tmp_path / 'empty'} is empty"]


def test_secret_from_file_beside_variable(tmp_path: Path) -> None:
    (tmp_path / "sec").write_text("sec-from-file")
    env = {**BASE, "TRADOVATE_SEC_FILE": "sec", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    del env["TRADOVATE_SEC"]
    assert load_settings(env).tradovate.sec == Secret("sec-from-file")
    both = {**BASE, "TRADOVATE_SEC_FILE": "sec", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert problems(both) == [
        "TRADOVATE_SEC: set either TRADOVATE_SEC or TRADOVATE_SEC_FILE, not both"
    ]


def test_password_variable_names() -> None:
    assert password_variable("APEX_266668") == "TRADOVATE_PASSWORD_APEX_266668"
    assert password_variable("trader.one@x") == "TRADOVATE_PASSWORD_TRADER_ONE_X"


def test_dotenv_is_read_and_the_real_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("REDIS_HOST=from-dotenv\nREDIS_PORT=7000\n")
    env = read_environment({"REDIS_PORT": "7001"})
    assert (env["REDIS_HOST"], env["REDIS_PORT"]) == ("from-dotenv", "7001")
    other = tmp_path / "other.env"
    other.write_text("REDIS_HOST=from-other\n")
    assert read_environment({"ORCA_ENV_FILE": str(other)})["REDIS_HOST"] == "from-other"


def test_missing_env_file_is_a_problem(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.env")
    env = read_environment({**BASE, "ORCA_ENV_FILE": missing})
    assert problems(env) == [f"ORCA_ENV_FILE: {missing} does not exist"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ORCA_TOKEN_TTL", "9223372036854775807"),
        ("ORCA_REFRESH_INTERVAL", "0"),
        ("ORCA_TRADOVATE_TIMEOUT", "inf"),
        ("ORCA_TRADOVATE_TIMEOUT", "nan"),
        ("REDIS_SOCKET_CONNECT_TIMEOUT", "1e400"),
        ("ORCA_AUTH_RATE_LIMIT", "-1"),
        ("ORCA_TOKEN_PROBE_INTERVAL", "99999999"),
        ("ORCA_RENEW_LEAD_FLOOR", "119"),
        ("ORCA_RENEW_LEAD_FLOOR", "901"),
    ],
)
def test_every_numeric_setting_is_bounded(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**BASE, name: value})
    assert any(problem.startswith(f"{name}: ") for problem in caught.value.problems)


def test_the_renewal_lead_floor_is_five_minutes_and_says_its_bounds() -> None:
    assert load_settings(BASE).renew_lead_floor_s == 300
    assert load_settings({**BASE, "ORCA_RENEW_LEAD_FLOOR": "120"}).renew_lead_floor_s == 120
    assert problems({**BASE, "ORCA_RENEW_LEAD_FLOOR": "60"}) == [
        "ORCA_RENEW_LEAD_FLOOR: 60 is out of range (must be between 120 and 900)"
    ]


def test_when_budget_short_is_read_from_the_accounts_file(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        '[[accounts]]\nname = "A"\npassword_env = "PW_A"\n\n'
        '[[accounts]]\nname = "B"\npassword_env = "PW_B"\nwhen_budget_short = "relogin"\n'
    )
    env = {**BASE, "ORCA_ACCOUNTS_FILE": str(accounts), "PW_A": "pw-a-123", "PW_B": "pw-b-123"}
    env.pop("ORCA_ACCOUNTS", None)
    logins = load_settings(env).logins
    assert [(login.name, login.when_budget_short) for login in logins] == [
        ("A", "wait"),
        ("B", "relogin"),
    ]
    accounts.write_text(
        '[[accounts]]\nname = "A"\npassword_env = "PW_A"\nwhen_budget_short = "x"\n'
    )
    with pytest.raises(ConfigError, match="when_budget_short must be one of wait, relogin"):
        load_settings(env)


def test_what_tradovate_would_refuse_for_length_stops_the_start() -> None:
    """AccessTokenRequest takes 64 characters a field and 8,192 of `sec`: more is named at
    start (lengths only, never the value), every one at once."""
    long_name = "APEX_" + "9" * 60
    env = {
        **BASE,
        "ORCA_ACCOUNTS": f"APEX_1,{long_name}",
        f"TRADOVATE_PASSWORD_{long_name}": "pw",
        "TRADOVATE_PASSWORD_APEX_1": "p" * 65,
        "TRADOVATE_APP_ID": "a" * 65,
        "TRADOVATE_APP_VERSION": "1" * 65,
        "TRADOVATE_DEVICE_ID": "d" * 65,
        "TRADOVATE_SEC": "s" * 8_193,
    }
    found = problems(env)
    assert "TRADOVATE_APP_ID: 65 characters, Tradovate takes 64 at most" in found
    assert "TRADOVATE_APP_VERSION: 65 characters, Tradovate takes 64 at most" in found
    assert "TRADOVATE_DEVICE_ID: 65 characters, Tradovate takes 64 at most" in found
    assert "TRADOVATE_SEC: 8193 characters, Tradovate takes 8192 at most" in found
    assert "login APEX_1: its password is over 64 characters" in found
    assert any(p.endswith("the name is over 64 characters") for p in found)
    assert not any("ppp" in p or "sss" in p for p in found)
    ok = {**env, "ORCA_ACCOUNTS": "APEX_1", "TRADOVATE_PASSWORD_APEX_1": "p" * 64}
    for name in ("TRADOVATE_APP_ID", "TRADOVATE_APP_VERSION", "TRADOVATE_DEVICE_ID"):
        ok[name] = ok[name][:64]
    ok["TRADOVATE_SEC"] = "s" * 8_192
    assert load_settings(ok).tradovate.device_id == "d" * 64


@pytest.mark.e2e
def test_an_over_long_setting_exits_78(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**BASE, "TRADOVATE_APP_ID": "a" * 65, "PATH": "/usr/bin:/bin"}
    ran = subprocess.run(
        [sys.executable, "-m", "daemon", "run", "--once"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ran.returncode == 78
    assert "TRADOVATE_APP_ID: 65 characters" in ran.stderr + ran.stdout


def test_the_price_feed_is_off_without_symbols_and_defaults_to_the_first_login() -> None:
    assert load_settings(BASE).price.symbols == ()
    price = load_settings({**BASE, "ORCA_PRICE_SYMBOLS": " MNQZ5, MNQ ,MNQZ5,"}).price
    assert price.symbols == ("MNQZ5", "MNQ")  # each once, in order
    assert price.login == "APEX_1"
    assert price.md_url == "wss://md-demo.tradovateapi.com/v1/websocket"
    assert price.legacy_channels is False
    live = load_settings({**BASE, "ORCA_PRICE_SYMBOLS": "ES", "TRADOVATE_ENV": "live"}).price
    assert live.md_url == "wss://md.tradovateapi.com/v1/websocket"


def test_every_bad_price_setting_is_named_in_one_line() -> None:
    env = {
        **BASE,
        "ORCA_PRICE_SYMBOLS": "MNQZ5,mnq z5,price:*",
        "ORCA_PRICE_LOGIN": "APEX_9",
        "TRADOVATE_MD_URL": "https://md-demo.tradovateapi.com/v1/websocket",
        "ORCA_PRICE_LEGACY_CHANNELS": "maybe",
    }
    found = problems(env)
    assert found == [
        "TRADOVATE_MD_URL: 'https://md-demo.tradovateapi.com/v1/websocket' is not a ws(s):// URL",
        "ORCA_PRICE_SYMBOLS: 'mnq z5' is not a symbol: capital letters and digits, a contract "
        "(MNQZ5) or a product root (MNQ)",
        "ORCA_PRICE_SYMBOLS: 'price:*' is not a symbol: capital letters and digits, a contract "
        "(MNQZ5) or a product root (MNQ)",
        "ORCA_PRICE_LOGIN: 'APEX_9' is not a configured login",
        "ORCA_PRICE_LEGACY_CHANNELS: 'maybe' is not a boolean (use true or false)",
    ]
