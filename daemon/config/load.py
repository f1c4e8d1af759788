"""Settings built once at the edge: every setting read, checked and bounded, every problem named
in one ConfigError (exit 78)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from daemon.config.accounts import read_logins
from daemon.config.model import (
    LOG_FORMATS,
    LOG_LEVELS,
    ConfigError,
    Login,
    PriceSettings,
    RedisSettings,
    Settings,
    TradovateSettings,
    host_and_port,
    registered,
)
from daemon.config.reader import EnvReader
from daemon.config.secret import Secret
from daemon.constants import (
    MAX_RENEW_BUDGET_PER_HOUR,
    RENEW_BEFORE_EXPIRY_S,
    RENEW_LEAD_FLOOR_MIN_S,
    TRADOVATE_BASE_URLS,
    TRADOVATE_MD_URLS,
    TRADOVATE_TV_BASE_URLS,
)
from daemon.values import SAFE_NAME


def load_settings(env: Mapping[str, str], *, credentials: bool = True) -> Settings:
    """Build Settings from an environment mapping (see `read_environment`).

    With credentials=False (operator commands that only read Redis) passwords, `sec` and the app
    identity are not required, and a missing default accounts file means no logins.
    Raises ConfigError naming every bad setting at once.
    """
    reader = EnvReader(env)
    if "ORCA_ENV_FILE" in env and not Path(env["ORCA_ENV_FILE"]).is_file():
        reader.problem("ORCA_ENV_FILE", f"{env['ORCA_ENV_FILE']} does not exist")
    logins = read_logins(reader, credentials=credentials)
    # The API key is needed only when some login uses it (SPEC, "Two ways to log in").
    api_key_needed = credentials and any(login.route == "api" for login in logins)
    settings = Settings(
        redis=_redis_settings(reader),
        tradovate=_tradovate_settings(reader, api_key_needed=api_key_needed),
        logins=logins,
        token_ttl_s=reader.integer("ORCA_TOKEN_TTL", low=1, high=7 * 86_400),
        refresh_interval_s=reader.integer("ORCA_REFRESH_INTERVAL", low=1, high=86_400),
        token_probe_interval_s=reader.integer("ORCA_TOKEN_PROBE_INTERVAL", low=1, high=3_600),
        auth_rate_limit=reader.integer("ORCA_AUTH_RATE_LIMIT", low=1, high=1_000_000),
        refresh_concurrency=reader.integer("ORCA_REFRESH_CONCURRENCY", low=1, high=1_000),
        captcha_park_s=reader.integer("ORCA_CAPTCHA_PARK", low=1, high=7 * 86_400),
        health_addr=_health_addr(reader),
        alert_webhook_url=_webhook(reader),
        audit_dsn=reader.secret("ORCA_AUDIT_DSN", required=False),
        log_format=reader.choice("ORCA_LOG_FORMAT", LOG_FORMATS),
        log_level=reader.choice("ORCA_LOG_LEVEL", LOG_LEVELS),
        log_file=reader.text("ORCA_LOG_FILE"),
        log_max_bytes=reader.integer("ORCA_LOG_MAX_BYTES", low=1_024, high=1 << 40),
        log_backups=reader.integer("ORCA_LOG_BACKUPS", low=0, high=1_000),
        renew_budget_per_hour=reader.integer(
            "ORCA_RENEW_BUDGET_PER_HOUR", low=1, high=MAX_RENEW_BUDGET_PER_HOUR
        ),
        login_failure_budget_per_hour=reader.integer(
            "ORCA_LOGIN_FAILURE_BUDGET_PER_HOUR", low=1, high=10_000
        ),
        renew_lead_floor_s=reader.integer(
            "ORCA_RENEW_LEAD_FLOOR", low=RENEW_LEAD_FLOOR_MIN_S, high=RENEW_BEFORE_EXPIRY_S
        ),
        budget_group=_budget_group(reader),
        budget_window_s=reader.integer("ORCA_BUDGET_WINDOW", low=1, high=86_400),
        price=_price_settings(reader, logins),
    )
    _check_lengths(reader, settings)
    if reader.problems:
        raise ConfigError(reader.problems)
    return replace(settings, credential_files=tuple(reader.files_read))


# AccessTokenRequest's limits (SPEC, "Tradovate's documented answers"): Tradovate refuses more.
FIELD_MAX_CHARS = 64
SEC_MAX_CHARS = 8_192


def _check_lengths(reader: EnvReader, settings: Settings) -> None:
    """What Tradovate would refuse, named at start (lengths only, never a value)."""
    tradovate = settings.tradovate
    fields = {
        "TRADOVATE_APP_ID": tradovate.app_id,
        "TRADOVATE_APP_VERSION": tradovate.app_version,
        "TRADOVATE_DEVICE_ID": tradovate.device_id or "",
        "TRADOVATE_CID": str(tradovate.cid),
    }
    for name, value in fields.items():
        if len(value) > FIELD_MAX_CHARS:
            reader.problem(
                name, f"{len(value)} characters, Tradovate takes {FIELD_MAX_CHARS} at most"
            )
    sec = tradovate.sec.reveal() if tradovate.sec is not None else ""
    if len(sec) > SEC_MAX_CHARS:
        reader.problem(
            "TRADOVATE_SEC", f"{len(sec)} characters, Tradovate takes {SEC_MAX_CHARS} at most"
        )
    for login in settings.logins:
        if len(login.name) > FIELD_MAX_CHARS:
            reader.problem(
                f"login {login.name[:20]}...", f"the name is over {FIELD_MAX_CHARS} characters"
            )
        password = login.password.reveal() if login.password is not None else ""
        if len(password) > FIELD_MAX_CHARS:
            reader.problem(
                f"login {login.name}", f"its password is over {FIELD_MAX_CHARS} characters"
            )


SYMBOL = re.compile(r"[A-Z0-9]{1,32}")


def _price_settings(reader: EnvReader, logins: tuple[Login, ...]) -> PriceSettings:
    """The feed runs only with symbols; its login must be configured, its URL a websocket."""
    env = reader.choice("TRADOVATE_ENV", ("demo", "live"))
    md_url = reader.text("TRADOVATE_MD_URL") or TRADOVATE_MD_URLS[env]
    if not md_url.startswith(("wss://", "ws://")):
        reader.problem("TRADOVATE_MD_URL", f"{md_url!r} is not a ws(s):// URL")
    symbols = tuple(
        dict.fromkeys(s.strip() for s in (reader.text("ORCA_PRICE_SYMBOLS") or "").split(","))
    )
    symbols = tuple(s for s in symbols if s)
    for symbol in symbols:
        if not SYMBOL.fullmatch(symbol):
            reader.problem(
                "ORCA_PRICE_SYMBOLS",
                f"{symbol[:40]!r} is not a symbol: capital letters and digits, a contract "
                "(MNQZ5) or a product root (MNQ)",
            )
    login = reader.text("ORCA_PRICE_LOGIN") or (logins[0].name if logins else "")
    names = {known.name for known in logins}
    if symbols and login not in names:
        reader.problem(
            "ORCA_PRICE_LOGIN",
            f"{login!r} is not a configured login" if login else "no login is configured",
        )
    return PriceSettings(
        symbols=symbols,
        login=login,
        md_url=md_url,
        legacy_channels=reader.boolean("ORCA_PRICE_LEGACY_CHANNELS"),
    )


def load_redis_settings(env: Mapping[str, str]) -> RedisSettings:
    """Only the Redis part, for library users of `get_redis_client()`."""
    reader = EnvReader(env)
    settings = _redis_settings(reader)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def _redis_settings(reader: EnvReader) -> RedisSettings:
    url = reader.secret("REDIS_URL", required=False)
    if url is not None and not url.reveal().startswith(("redis://", "rediss://")):
        # The URL may hold a password: name the problem, never quote the value.
        reader.problem("REDIS_URL", "must start with redis:// or rediss://")
        url = None
    ssl_ca_certs = reader.text("REDIS_SSL_CA_CERTS")
    if ssl_ca_certs is not None and not Path(ssl_ca_certs).is_file():
        reader.problem("REDIS_SSL_CA_CERTS", f"{ssl_ca_certs} does not exist")
    cert_reqs = reader.choice("REDIS_SSL_CERT_REQS", ("required", "none"))
    cluster = reader.boolean("REDIS_CLUSTER")
    if cluster and reader.integer("REDIS_DB", low=0, high=10_000) != 0:
        reader.problem("REDIS_DB", "Redis Cluster has only database 0")
    return RedisSettings(
        url=url,
        host=reader.string("REDIS_HOST"),
        port=reader.integer("REDIS_PORT", low=1, high=65_535),
        db=reader.integer("REDIS_DB", low=0, high=10_000),
        username=reader.text("REDIS_USERNAME"),
        password=reader.secret("REDIS_PASSWORD", required=False),
        password_file=reader.secret_path("REDIS_PASSWORD"),
        url_file=reader.secret_path("REDIS_URL"),
        ssl=reader.boolean("REDIS_SSL"),
        ssl_ca_certs=ssl_ca_certs,
        ssl_cert_reqs="none" if cert_reqs == "none" else "required",
        max_connections=reader.integer("REDIS_MAX_CONNECTIONS", low=1, high=10_000),
        socket_connect_timeout_s=reader.number("REDIS_SOCKET_CONNECT_TIMEOUT", low=0.1, high=300),
        cluster=cluster,
    )


def _tradovate_settings(reader: EnvReader, *, api_key_needed: bool) -> TradovateSettings:
    env = reader.choice("TRADOVATE_ENV", ("demo", "live"))
    base_url = reader.text("TRADOVATE_BASE_URL") or TRADOVATE_BASE_URLS[env]
    tv_base_url = reader.text("TRADOVATE_TV_BASE_URL") or TRADOVATE_TV_BASE_URLS[env]
    for name, url in (("TRADOVATE_BASE_URL", base_url), ("TRADOVATE_TV_BASE_URL", tv_base_url)):
        if not url.startswith(("https://", "http://")):
            reader.problem(name, f"{url!r} is not an http(s) URL")
    needed = " (a login uses the api route: or set TRADOVATE_LOGIN=tradingview)"
    app_id = reader.text("TRADOVATE_APP_ID") or ""
    if api_key_needed and not app_id:
        reader.problem("TRADOVATE_APP_ID", "is not set" + needed)
    cid = 0
    cid_text = reader.text("TRADOVATE_CID")
    if cid_text is None:
        if api_key_needed:
            reader.problem("TRADOVATE_CID", "is not set" + needed)
    elif cid_text.isdigit():
        cid = int(cid_text)
    else:
        reader.problem("TRADOVATE_CID", f"{cid_text!r} is not a number")
    return TradovateSettings(
        env="live" if env == "live" else "demo",
        base_url=base_url.rstrip("/"),
        tv_base_url=tv_base_url.rstrip("/"),
        app_id=app_id,
        app_version=reader.string("TRADOVATE_APP_VERSION"),
        cid=cid,
        sec=_sec(reader, required=api_key_needed, needed=needed),
        device_id=reader.text("TRADOVATE_DEVICE_ID"),
        timeout_s=reader.number("ORCA_TRADOVATE_TIMEOUT", low=0.1, high=600),
        local_address=_local_address(reader),
    )


def _sec(reader: EnvReader, *, required: bool, needed: str) -> Secret | None:
    known = len(reader.problems)
    sec = reader.secret("TRADOVATE_SEC", required=False)
    if required and sec is None and len(reader.problems) == known:  # not named already
        reader.problem("TRADOVATE_SEC", "is not set" + needed)
    return sec


def _local_address(reader: EnvReader) -> str | None:
    text = reader.text("TRADOVATE_LOCAL_ADDRESS")
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        reader.problem("TRADOVATE_LOCAL_ADDRESS", f"{text[:40]!r} is not an IP address")
        return None


def _budget_group(reader: EnvReader) -> str:
    group = reader.string("ORCA_BUDGET_GROUP")
    if not SAFE_NAME.match(group):
        reader.problem("ORCA_BUDGET_GROUP", f"{group[:40]!r}: letters, digits, _ - . only")
        return str(registered("ORCA_BUDGET_GROUP"))
    return group


def _webhook(reader: EnvReader) -> Secret | None:
    url = reader.secret("ORCA_ALERT_WEBHOOK_URL", required=False)
    if url is not None and not url.reveal().startswith(("https://", "http://")):
        reader.problem("ORCA_ALERT_WEBHOOK_URL", "must be an http(s) URL")
        return None
    return url


def _health_addr(reader: EnvReader) -> tuple[str, int] | None:
    raw = reader.env.get("ORCA_HEALTH_ADDR", str(registered("ORCA_HEALTH_ADDR"))).strip()
    if not raw:
        return None
    address = host_and_port(raw)
    if address is None:
        reader.problem("ORCA_HEALTH_ADDR", f"{raw!r} is not host:port (empty disables it)")
    return address
