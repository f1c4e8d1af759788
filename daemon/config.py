"""Configuration, read once at the edge into frozen dataclasses whose repr masks secrets.

Every setting comes from the environment; a `.env` file (or the one named by ORCA_ENV_FILE) is read
first and the real environment wins. Secrets may also come from files: `NAME_FILE` beside `NAME`,
relative to $CREDENTIALS_DIRECTORY (systemd LoadCredential=) when that is set.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values

from daemon.constants import (
    TRADOVATE_BASE_URLS,
)
from daemon.registry import setting
from daemon.values import SAFE_NAME

EX_CONFIG = 78  # sysexits.h EX_CONFIG; systemd's RestartPreventExitStatus names it
LOGIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")
LOG_FORMATS = ("auto", "json", "console")
WHEN_BUDGET_SHORT = ("wait", "relogin")  # the first is the default
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _registered(name: str) -> Any:
    """A setting's default, from the registry: the one place a default is written."""
    return setting(name).default


def host_and_port(text: str) -> tuple[str, int] | None:
    """`host:port` (`[v6]:port` too) as a pair, or None when it is not one."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65_535:
        return None
    return (host, int(port_text))


class Secret:
    """A value that must never be shown: its repr and str are masks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


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


@dataclass(frozen=True)
class RedisSettings:
    url: Secret | None = None  # may carry a password, so it is a secret as a whole
    host: str = _registered("REDIS_HOST")
    port: int = _registered("REDIS_PORT")
    db: int = _registered("REDIS_DB")
    username: str | None = None
    password: Secret | None = None
    ssl: bool = _registered("REDIS_SSL")
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: Literal["required", "none"] = _registered("REDIS_SSL_CERT_REQS")
    max_connections: int = _registered("REDIS_MAX_CONNECTIONS")
    socket_connect_timeout_s: float = _registered("REDIS_SOCKET_CONNECT_TIMEOUT")
    cluster: bool = _registered("REDIS_CLUSTER")  # Redis Cluster (Azure Premium clustering)

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

    @property
    def uses_tls(self) -> bool:
        if self.url is not None:
            return self.url.reveal().startswith("rediss://")
        return self.ssl


@dataclass(frozen=True)
class TradovateSettings:
    env: Literal["demo", "live"] = _registered("TRADOVATE_ENV")
    base_url: str = TRADOVATE_BASE_URLS[_registered("TRADOVATE_ENV")]
    app_id: str = ""
    app_version: str = _registered("TRADOVATE_APP_VERSION")
    cid: int = 0
    sec: Secret | None = None
    device_id: str | None = None  # None: derived per login from the machine id
    timeout_s: float = _registered("ORCA_TRADOVATE_TIMEOUT")
    local_address: str | None = None  # source address of calls to Tradovate


@dataclass(frozen=True)
class Settings:
    redis: RedisSettings = field(default_factory=RedisSettings)
    tradovate: TradovateSettings = field(default_factory=TradovateSettings)
    logins: tuple[Login, ...] = ()
    token_ttl_s: int = _registered("ORCA_TOKEN_TTL")
    refresh_interval_s: int = _registered("ORCA_REFRESH_INTERVAL")
    token_probe_interval_s: int = _registered("ORCA_TOKEN_PROBE_INTERVAL")
    auth_rate_limit: int = _registered("ORCA_AUTH_RATE_LIMIT")
    refresh_concurrency: int = _registered("ORCA_REFRESH_CONCURRENCY")
    captcha_park_s: int = _registered("ORCA_CAPTCHA_PARK")
    health_addr: tuple[str, int] | None = host_and_port(_registered("ORCA_HEALTH_ADDR"))
    alert_webhook_url: Secret | None = None  # webhook URLs embed their own secret
    audit_dsn: Secret | None = None  # PostgreSQL DSN for token history; may hold a password
    log_format: str = _registered("ORCA_LOG_FORMAT")
    log_level: str = _registered("ORCA_LOG_LEVEL")
    log_file: str | None = None  # None: stderr
    log_max_bytes: int = _registered("ORCA_LOG_MAX_BYTES")
    log_backups: int = _registered("ORCA_LOG_BACKUPS")
    renew_budget_per_hour: int = _registered("ORCA_RENEW_BUDGET_PER_HOUR")
    login_failure_budget_per_hour: int = _registered("ORCA_LOGIN_FAILURE_BUDGET_PER_HOUR")
    budget_group: str = _registered("ORCA_BUDGET_GROUP")
    budget_window_s: int = _registered("ORCA_BUDGET_WINDOW")
    credential_files: tuple[str, ...] = ()  # the secret files read, for checks of their modes

    def secrets(self) -> list[str]:
        """Every secret value, so the log redactor can scrub them wherever they appear."""
        found = [self.redis.password, self.tradovate.sec, self.alert_webhook_url]
        found += [login.password for login in self.logins]
        values = [s.reveal() for s in found if s is not None]
        for url in (self.redis.url, self.audit_dsn):
            if url is not None:
                values.append(_embedded_password(url.reveal()))
        return [value for value in values if value]


def _embedded_password(dsn: str) -> str:
    """The password inside a URL (scheme://user:pw@host) or a libpq string (password=pw)."""
    if "://" in dsn:
        return urlsplit(dsn).password or ""
    found = re.search(r"(?:^|\s)password\s*=\s*'?([^'\s]+)", dsn)
    return found.group(1) if found else ""


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the `.env` file (ORCA_ENV_FILE names another file)."""
    return read_environment_with_sources(environ)[0]


def read_environment_with_sources(
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """(`read_environment`, where each value came from: "environment" or the env file)."""
    environ = os.environ if environ is None else environ
    env_file = environ.get("ORCA_ENV_FILE")
    path = Path(env_file) if env_file else Path(".env")
    merged: dict[str, str] = {}
    sources: dict[str, str] = {}
    if path.is_file():  # a missing ORCA_ENV_FILE is reported by load_settings with the rest
        from_file = {k: v for k, v in dotenv_values(path).items() if v is not None}
        merged.update(from_file)
        sources.update(dict.fromkeys(from_file, str(path)))
    merged.update(environ)
    sources.update(dict.fromkeys(environ, "environment"))
    return merged, sources


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unsafe_choices(settings: Settings) -> list[tuple[str, dict[str, object]]]:
    """What this configuration exposes, said at every start of every command: (event, fields)."""
    found: list[tuple[str, dict[str, object]]] = []
    if settings.redis.uses_tls and settings.redis.ssl_cert_reqs == "none":
        found.append(
            ("redis.tls_unverified", {"hint": "REDIS_SSL_CERT_REQS=none: set it to required"})
        )
    if settings.health_addr is not None and not is_loopback(settings.health_addr[0]):
        found.append(
            (
                "health.exposed",
                {
                    "address": settings.health_addr[0],
                    "hint": "/metrics and /readyz are open beyond this machine",
                },
            )
        )
    loose = loose_credential_files(settings)
    if loose:
        found.append(("config.credential_file_loose", {"files": loose, "hint": "chmod 600 them"}))
    return found


def loose_credential_files(settings: Settings) -> list[str]:
    """Credential files that others than their owner may read (group or world bits)."""
    loose = []
    for name in settings.credential_files:
        try:
            mode = Path(name).stat().st_mode
        except OSError:
            continue
        if mode & 0o077:
            loose.append(f"{name} (mode {stat.S_IMODE(mode):04o})")
    return loose


class _Reader:
    """Reads typed values from an environment mapping, collecting problems instead of raising."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self.credentials_dir = env.get("CREDENTIALS_DIRECTORY") or None
        self.files_read: list[str] = []  # credential files, for the checks of their modes

    def problem(self, name: str, message: str) -> None:
        self.problems.append(f"{name}: {message}")

    def text(self, name: str) -> str | None:
        """The value, stripped, or the registered default (None when it has none)."""
        default = setting(name).default
        value = self.env.get(name, "").strip()
        return value or (str(default) if default is not None else None)

    def string(self, name: str) -> str:
        """The value, stripped, or the registered default of a setting that has one."""
        default = setting(name).default
        if default is None:
            raise KeyError(f"{name} has no registered default")
        return self.env.get(name, "").strip() or str(default)

    def given(self, name: str) -> str | None:
        """The value as set (stripped), None when unset or empty: no default."""
        setting(name)  # every variable read is registered
        return self.env.get(name, "").strip() or None

    def integer(self, name: str, *, low: int, high: int) -> int:
        default = int(setting(name).default or 0)
        raw = self.given(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.problem(name, f"{raw!r} is not an integer")
            return default
        if not low <= value <= high:
            self.problem(name, f"{value} is out of range (must be between {low} and {high})")
            return default
        return value

    def number(self, name: str, *, low: float, high: float) -> float:
        default = float(setting(name).default or 0.0)
        raw = self.given(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.problem(name, f"{raw!r} is not a number")
            return default
        if not low <= value <= high:  # NaN and infinities fail here too
            self.problem(name, f"{raw} is out of range (must be between {low:g} and {high:g})")
            return default
        return value

    def boolean(self, name: str) -> bool:
        default = bool(setting(name).default)
        raw = self.given(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        self.problem(name, f"{raw!r} is not a boolean (use true or false)")
        return default

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        default = str(setting(name).default)
        raw = self.given(name)
        if raw is None:
            return default
        if raw.lower() not in choices:
            self.problem(name, f"{raw!r} is not one of {', '.join(choices)}")
            return default
        return raw.lower()

    def secret_file(self, name: str, path_text: str) -> Secret | None:
        path = Path(path_text)
        if not path.is_absolute() and self.credentials_dir:
            path = Path(self.credentials_dir) / path
        self.files_read.append(str(path))
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.problem(name, f"cannot read {path}: {exc.strerror or exc}")
            return None
        if not value:
            self.problem(name, f"{path} is empty")
            return None
        return Secret(value)

    def secret(self, name: str, *, required: bool) -> Secret | None:
        """`NAME`, or the file named by `NAME_FILE`. The value itself is never quoted."""
        value = self.env.get(name, "").strip()
        file_name = self.env.get(f"{name}_FILE", "").strip() or None
        if value and file_name:
            self.problem(name, f"set either {name} or {name}_FILE, not both")
            return None
        if file_name:
            return self.secret_file(f"{name}_FILE", file_name)
        if value:
            return Secret(value)
        if required:
            self.problem(name, "is not set")
        return None


def load_settings(env: Mapping[str, str], *, credentials: bool = True) -> Settings:
    """Build Settings from an environment mapping (see `read_environment`).

    With credentials=False (operator commands that only read Redis) passwords, `sec` and the app
    identity are not required, and a missing default accounts file means no logins.
    Raises ConfigError naming every bad setting at once.
    """
    reader = _Reader(env)
    if "ORCA_ENV_FILE" in env and not Path(env["ORCA_ENV_FILE"]).is_file():
        reader.problem("ORCA_ENV_FILE", f"{env['ORCA_ENV_FILE']} does not exist")
    settings = Settings(
        redis=_redis_settings(reader),
        tradovate=_tradovate_settings(reader, credentials=credentials),
        logins=_logins(reader, credentials=credentials),
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
        renew_budget_per_hour=reader.integer("ORCA_RENEW_BUDGET_PER_HOUR", low=1, high=10_000),
        login_failure_budget_per_hour=reader.integer(
            "ORCA_LOGIN_FAILURE_BUDGET_PER_HOUR", low=1, high=10_000
        ),
        budget_group=_budget_group(reader),
        budget_window_s=reader.integer("ORCA_BUDGET_WINDOW", low=1, high=86_400),
    )
    if reader.problems:
        raise ConfigError(reader.problems)
    return replace(settings, credential_files=tuple(reader.files_read))


def load_redis_settings(env: Mapping[str, str]) -> RedisSettings:
    """Only the Redis part, for library users of `get_redis_client()`."""
    reader = _Reader(env)
    settings = _redis_settings(reader)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


def _redis_settings(reader: _Reader) -> RedisSettings:
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
        ssl=reader.boolean("REDIS_SSL"),
        ssl_ca_certs=ssl_ca_certs,
        ssl_cert_reqs="none" if cert_reqs == "none" else "required",
        max_connections=reader.integer("REDIS_MAX_CONNECTIONS", low=1, high=10_000),
        socket_connect_timeout_s=reader.number("REDIS_SOCKET_CONNECT_TIMEOUT", low=0.1, high=300),
        cluster=cluster,
    )


def _tradovate_settings(reader: _Reader, *, credentials: bool) -> TradovateSettings:
    env = reader.choice("TRADOVATE_ENV", ("demo", "live"))
    base_url = reader.text("TRADOVATE_BASE_URL") or TRADOVATE_BASE_URLS[env]
    if not base_url.startswith(("https://", "http://")):
        reader.problem("TRADOVATE_BASE_URL", f"{base_url!r} is not an http(s) URL")
    app_id = reader.text("TRADOVATE_APP_ID") or ""
    if credentials and not app_id:
        reader.problem("TRADOVATE_APP_ID", "is not set")
    cid = 0
    cid_text = reader.text("TRADOVATE_CID")
    if cid_text is None:
        if credentials:
            reader.problem("TRADOVATE_CID", "is not set")
    elif cid_text.isdigit():
        cid = int(cid_text)
    else:
        reader.problem("TRADOVATE_CID", f"{cid_text!r} is not a number")
    return TradovateSettings(
        env="live" if env == "live" else "demo",
        base_url=base_url.rstrip("/"),
        app_id=app_id,
        app_version=reader.string("TRADOVATE_APP_VERSION"),
        cid=cid,
        sec=reader.secret("TRADOVATE_SEC", required=credentials),
        device_id=reader.text("TRADOVATE_DEVICE_ID"),
        timeout_s=reader.number("ORCA_TRADOVATE_TIMEOUT", low=0.1, high=600),
        local_address=_local_address(reader),
    )


def password_variable(login_name: str) -> str:
    """TRADOVATE_PASSWORD_<NAME>, the password variable of a login listed in ORCA_ACCOUNTS."""
    return "TRADOVATE_PASSWORD_" + re.sub(r"[^A-Za-z0-9]", "_", login_name).upper()


def _logins(reader: _Reader, *, credentials: bool) -> tuple[Login, ...]:
    listed = reader.text("ORCA_ACCOUNTS")
    if listed is not None:
        names = [name.strip() for name in listed.split(",") if name.strip()]
        entries = [(name, {"password_env": password_variable(name)}) for name in names]
        source = "ORCA_ACCOUNTS"
    else:
        explicit = reader.given("ORCA_ACCOUNTS_FILE")
        path = Path(explicit or str(setting("ORCA_ACCOUNTS_FILE").default))
        if not path.is_file():
            if credentials or explicit:
                reader.problem(
                    "ORCA_ACCOUNTS_FILE", f"{path} does not exist (or set ORCA_ACCOUNTS)"
                )
            return ()
        source = str(path)
        entries = _accounts_file_entries(reader, path)

    logins: list[Login] = []
    seen: set[str] = set()
    for name, entry in entries:
        if not LOGIN_NAME.match(name):
            reader.problem(source, f"login name {name!r} is not a Tradovate user name")
            continue
        if name in seen:
            reader.problem(source, f"login {name} is listed twice")
            continue
        seen.add(name)
        password = _login_password(reader, name, entry) if credentials else None
        choice = entry.get("when_budget_short", WHEN_BUDGET_SHORT[0])
        logins.append(Login(name=name, password=password, when_budget_short=choice))
    if credentials and not logins and not reader.problems:
        reader.problem(source, "lists no logins")
    return tuple(logins)


def _accounts_file_entries(reader: _Reader, path: Path) -> list[tuple[str, dict[str, str]]]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        reader.problem("ORCA_ACCOUNTS_FILE", f"cannot read {path}: {exc}")
        return []
    except tomllib.TOMLDecodeError as exc:
        reader.problem("ORCA_ACCOUNTS_FILE", f"{path} is not valid TOML: {exc}")
        return []
    accounts = document.get("accounts")
    if not isinstance(accounts, list) or not all(isinstance(a, dict) for a in accounts):
        reader.problem("ORCA_ACCOUNTS_FILE", f"{path} needs [[accounts]] tables")
        return []
    entries = []
    for number, account in enumerate(accounts, start=1):
        where = f"{path} [[accounts]] #{number}"
        unknown = set(account) - {"name", "password_env", "password_file", "when_budget_short"}
        if unknown:
            reader.problem(where, f"unknown keys {', '.join(sorted(unknown))}")
        if "password" in account:
            reader.problem(
                where, "passwords never live in this file: use password_env or password_file"
            )
        name = account.get("name")
        if not isinstance(name, str) or not name.strip():
            reader.problem(where, "needs a name")
            continue
        sources = {k: v for k, v in account.items() if k in ("password_env", "password_file")}
        if len(sources) != 1 or not all(isinstance(v, str) and v for v in sources.values()):
            reader.problem(where, f"{name} needs exactly one of password_env or password_file")
            continue
        choice = account.get("when_budget_short", WHEN_BUDGET_SHORT[0])
        if choice not in WHEN_BUDGET_SHORT:
            reader.problem(
                where, f"when_budget_short must be one of {', '.join(WHEN_BUDGET_SHORT)}"
            )
            continue
        entries.append(
            (name.strip(), {**{k: str(v) for k, v in sources.items()}, "when_budget_short": choice})
        )
    return entries


def _login_password(reader: _Reader, name: str, entry: Mapping[str, str]) -> Secret | None:
    if "password_file" in entry:
        return reader.secret_file(f"password_file of {name}", entry["password_file"])
    return reader.secret(entry["password_env"], required=True)


def _local_address(reader: _Reader) -> str | None:
    text = reader.text("TRADOVATE_LOCAL_ADDRESS")
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        reader.problem("TRADOVATE_LOCAL_ADDRESS", f"{text[:40]!r} is not an IP address")
        return None


def _budget_group(reader: _Reader) -> str:
    group = reader.string("ORCA_BUDGET_GROUP")
    if not SAFE_NAME.match(group):
        reader.problem("ORCA_BUDGET_GROUP", f"{group[:40]!r}: letters, digits, _ - . only")
        return str(_registered("ORCA_BUDGET_GROUP"))
    return group


def _webhook(reader: _Reader) -> Secret | None:
    url = reader.secret("ORCA_ALERT_WEBHOOK_URL", required=False)
    if url is not None and not url.reveal().startswith(("https://", "http://")):
        reader.problem("ORCA_ALERT_WEBHOOK_URL", "must be an http(s) URL")
        return None
    return url


def _health_addr(reader: _Reader) -> tuple[str, int] | None:
    raw = reader.env.get("ORCA_HEALTH_ADDR", str(_registered("ORCA_HEALTH_ADDR"))).strip()
    if not raw:
        return None
    address = host_and_port(raw)
    if address is None:
        reader.problem("ORCA_HEALTH_ADDR", f"{raw!r} is not host:port (empty disables it)")
    return address
