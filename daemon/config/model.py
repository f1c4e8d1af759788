"""The configuration's shape: frozen dataclasses whose repr masks secrets, their defaults taken
from the registry (`daemon.registry`), and the one error that names every problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from daemon.config.secret import Secret, embedded_password
from daemon.constants import TRADOVATE_BASE_URLS, TRADOVATE_MD_URLS, TRADOVATE_TV_BASE_URLS
from daemon.registry import setting

EX_CONFIG = 78  # sysexits.h EX_CONFIG; systemd's RestartPreventExitStatus names it
LOG_FORMATS = ("auto", "json", "console")
WHEN_BUDGET_SHORT = ("wait", "relogin")  # the first is the default
LOGIN_ROUTES = ("api", "tradingview")  # SPEC, "Two ways to log in"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def registered(name: str) -> Any:
    """A setting's default, from the registry: the one place a default is written."""
    return setting(name).default


def host_and_port(text: str) -> tuple[str, int] | None:
    """`host:port` (`[v6]:port` too) as a pair, or None when it is not one."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65_535:
        return None
    return (host, int(port_text))


class ConfigError(Exception):
    """Every problem found in the configuration, reported together."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration: " + "; ".join(problems))


@dataclass(frozen=True)
class Login:
    name: str
    password: Secret | None = None  # None when settings were read without credentials
    # When the address's renewal budget runs out: "wait" (keep the token until it expires,
    # never open a session to save it) or "relogin" (an API-only login: log in instead).
    when_budget_short: str = WHEN_BUDGET_SHORT[0]
    # How it logs in: "api" (accesstokenrequest with the API key) or "tradingview" (/authorize
    # with name and password only). Renewals and everything after are the same for both.
    route: str = registered("TRADOVATE_LOGIN")


@dataclass(frozen=True)
class RedisSettings:
    url: Secret | None = None  # may carry a password, so it is a secret as a whole
    host: str = registered("REDIS_HOST")
    port: int = registered("REDIS_PORT")
    db: int = registered("REDIS_DB")
    username: str | None = None
    password: Secret | None = None
    ssl: bool = registered("REDIS_SSL")
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: Literal["required", "none"] = registered("REDIS_SSL_CERT_REQS")
    max_connections: int = registered("REDIS_MAX_CONNECTIONS")
    socket_connect_timeout_s: float = registered("REDIS_SOCKET_CONNECT_TIMEOUT")
    cluster: bool = registered("REDIS_CLUSTER")  # Redis Cluster (Azure Premium clustering)
    # Where REDIS_PASSWORD or REDIS_URL came from, when a file: read again at every new
    # connection, so a rotated key needs no restart.
    password_file: str | None = None
    url_file: str | None = None

    def target(self) -> str:
        """Where Redis is, for logs: no password, ever."""
        if self.url is not None:
            parts = urlsplit(self.url.reveal())
            user = f"{parts.username}@" if parts.username else ""
            port = f":{parts.port}" if parts.port else ""
            return f"{parts.scheme}://{user}{parts.hostname}{port}{parts.path or '/0'}"
        scheme = "rediss" if self.ssl else "redis"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}/{self.db}"

    def credentials_from(self) -> str | None:
        """The file the password is read from, for an operator (never the value)."""
        if self.url_file is not None:
            return f"REDIS_URL_FILE {self.url_file}"
        if self.password_file is not None:
            return f"REDIS_PASSWORD_FILE {self.password_file}"
        return None

    @property
    def uses_tls(self) -> bool:
        if self.url is not None:
            return self.url.reveal().startswith("rediss://")
        return self.ssl


@dataclass(frozen=True)
class TradovateSettings:
    env: Literal["demo", "live"] = registered("TRADOVATE_ENV")
    base_url: str = TRADOVATE_BASE_URLS[registered("TRADOVATE_ENV")]
    tv_base_url: str = TRADOVATE_TV_BASE_URLS[registered("TRADOVATE_ENV")]
    app_id: str = ""
    app_version: str = registered("TRADOVATE_APP_VERSION")
    cid: int = 0
    sec: Secret | None = None
    device_id: str | None = None  # None: derived per login from the machine id
    timeout_s: float = registered("ORCA_TRADOVATE_TIMEOUT")
    local_address: str | None = None  # source address of calls to Tradovate


@dataclass(frozen=True)
class PriceSettings:
    """The market-data feed: none while `symbols` is empty."""

    symbols: tuple[str, ...] = ()
    login: str = ""  # whose mdtoken: authorizes the socket
    md_url: str = TRADOVATE_MD_URLS[registered("TRADOVATE_ENV")]
    legacy_channels: bool = registered("ORCA_PRICE_LEGACY_CHANNELS")


@dataclass(frozen=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    tradovate: TradovateSettings = field(default_factory=TradovateSettings)
    logins: tuple[Login, ...] = ()
    token_ttl_s: int = registered("ORCA_TOKEN_TTL")
    refresh_interval_s: int = registered("ORCA_REFRESH_INTERVAL")
    token_probe_interval_s: int = registered("ORCA_TOKEN_PROBE_INTERVAL")
    auth_rate_limit: int = registered("ORCA_AUTH_RATE_LIMIT")
    refresh_concurrency: int = registered("ORCA_REFRESH_CONCURRENCY")
    captcha_park_s: int = registered("ORCA_CAPTCHA_PARK")
    health_addr: tuple[str, int] | None = host_and_port(registered("ORCA_HEALTH_ADDR"))
    alert_webhook_url: Secret | None = None  # webhook URLs embed their own secret
    audit_dsn: Secret | None = None  # PostgreSQL DSN for token history; may hold a password
    log_format: str = registered("ORCA_LOG_FORMAT")
    log_level: str = registered("ORCA_LOG_LEVEL")
    log_file: str | None = None  # None: stderr
    log_max_bytes: int = registered("ORCA_LOG_MAX_BYTES")
    log_backups: int = registered("ORCA_LOG_BACKUPS")
    renew_budget_per_hour: int = registered("ORCA_RENEW_BUDGET_PER_HOUR")
    login_failure_budget_per_hour: int = registered("ORCA_LOGIN_FAILURE_BUDGET_PER_HOUR")
    renew_lead_floor_s: int = registered("ORCA_RENEW_LEAD_FLOOR")
    budget_group: str = registered("ORCA_BUDGET_GROUP")
    budget_window_s: int = registered("ORCA_BUDGET_WINDOW")
    price: PriceSettings = field(default_factory=PriceSettings)
    credential_files: tuple[str, ...] = ()  # the secret files read, for checks of their modes

    def secrets(self) -> list[str]:
        """Every secret value, so the log redactor can scrub them wherever they appear."""
        found = [self.redis.password, self.tradovate.sec, self.alert_webhook_url]
        found += [login.password for login in self.logins]
        values = [s.reveal() for s in found if s is not None]
        for url in (self.redis.url, self.audit_dsn):
            if url is not None:
                values.append(embedded_password(url.reveal()))
        return [value for value in values if value]
