"""Every environment variable the code reads, once: its default and its meaning. The
configuration takes its defaults from here (`daemon.config`), `doctor` reports and checks
against it, `--help` lists it, and docs/configuration.md's table is generated from it (a
test compares the two)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from daemon.constants import (
    DEFAULT_CAPTCHA_PARK_S,
    DEFAULT_REFRESH_CONCURRENCY,
    DEFAULT_TOKEN_PROBE_INTERVAL_S,
    DEFAULT_TOKEN_TTL_S,
    RENEW_LEAD_FLOOR_S,
    TRADOVATE_TIMEOUT_S,
)

PREFIXES = ("REDIS_", "ORCA_", "TRADOVATE_")
PASSWORD_VARIABLE_PREFIX = "TRADOVATE_PASSWORD_"
SECRET_FILE_SUFFIX = "_FILE"

Default = str | int | float | bool | None


@dataclass(frozen=True)
class Setting:
    name: str
    default: Default
    meaning: str
    secret: bool = False  # masked wherever shown; NAME_FILE may hold it instead
    reader: str = "daemon"  # or "launcher": deploy/orca-tokens-nohup.sh reads it

    @property
    def default_text(self) -> str:
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting("REDIS_URL", None, "`redis://` or `rediss://` URL; when set it wins over the `REDIS_*` fields below", secret=True),
    Setting("REDIS_HOST", "localhost", "Redis host"),
    Setting("REDIS_PORT", 6379, "Redis port (Azure Cache for Redis: 6380 with TLS)"),
    Setting("REDIS_DB", 0, "database number (0 only on a cluster)"),
    Setting("REDIS_USERNAME", None, "ACL user"),
    Setting("REDIS_PASSWORD", None, "password", secret=True),
    Setting("REDIS_SSL", False, "TLS (Azure Cache for Redis: port 6380, `true`)"),
    Setting("REDIS_SSL_CA_CERTS", None, "CA bundle for verifying the server (default: the system store)"),
    Setting("REDIS_SSL_CERT_REQS", "required", "`required` or `none`; `none` warns at every start"),
    Setting("REDIS_MAX_CONNECTIONS", 10, "size of the one shared (blocking) pool"),
    Setting("REDIS_SOCKET_CONNECT_TIMEOUT", 5.0, "seconds to connect, TLS handshake included"),
    Setting("REDIS_CLUSTER", False, "Redis Cluster (docs/deploy.md#redis-cluster)"),
    Setting("TRADOVATE_ENV", "demo", "`demo` or `live`"),
    Setting("TRADOVATE_BASE_URL", None, "full base including `/v1` (default: from `TRADOVATE_ENV`)"),
    Setting("TRADOVATE_LOGIN", "api", "how logins log in: `api` (API key: app id, cid, sec) or `tradingview` (name and password only); per login `login =` in the accounts file"),
    Setting("TRADOVATE_TV_BASE_URL", None, "the TradingView route's base (default: from `TRADOVATE_ENV`, `https://tv-demo.tradovateapi.com` or `https://tv-live.tradovateapi.com`)"),
    Setting("TRADOVATE_APP_ID", None, "API app identity (required when a login uses `api`)"),
    Setting("TRADOVATE_APP_VERSION", "1.0", "API app version"),
    Setting("TRADOVATE_CID", None, "API key id (required when a login uses `api`)"),
    Setting("TRADOVATE_SEC", None, "API key secret (required when a login uses `api`)", secret=True),
    Setting("TRADOVATE_DEVICE_ID", None, "default: a UUID5 of each login's name, the same on every machine, container and restart; set it only to pin one id for all logins"),
    Setting("TRADOVATE_LOCAL_ADDRESS", None, "source address for calls to Tradovate, on hosts with several (give each its own ORCA_BUDGET_GROUP)"),
    Setting("TRADOVATE_PASSWORD_<NAME>", None, "password of a login listed in `ORCA_ACCOUNTS` (NAME upper-cased, non-alphanumerics as `_`)", secret=True),
    Setting("ORCA_ENV_FILE", ".env", "the env file read before the environment (the environment wins)"),
    Setting("ORCA_ACCOUNTS_FILE", "config/accounts.toml", "the logins (TOML, below)"),
    Setting("ORCA_ACCOUNTS", None, "for containers: comma-separated login names, passwords in `TRADOVATE_PASSWORD_<NAME>`"),
    Setting("ORCA_TOKEN_TTL", DEFAULT_TOKEN_TTL_S, "upper bound of a token key's TTL, seconds"),
    Setting("ORCA_REFRESH_INTERVAL", 3_600, "longest time between two refreshes of a login, seconds"),
    Setting("ORCA_TOKEN_PROBE_INTERVAL", DEFAULT_TOKEN_PROBE_INTERVAL_S, "how often each held token is checked with `/account/list` (no address budget), seconds"),
    Setting("ORCA_AUTH_RATE_LIMIT", 10, "most accesstokenrequest calls per 60 s, all logins together"),
    Setting("ORCA_REFRESH_CONCURRENCY", DEFAULT_REFRESH_CONCURRENCY, "refreshes running at once"),
    Setting("ORCA_RENEW_BUDGET_PER_HOUR", 15, "renewaccesstoken calls Tradovate allows per client address in a rolling hour (every request counts)"),
    Setting("ORCA_LOGIN_FAILURE_BUDGET_PER_HOUR", 5, "failed accesstokenrequest calls Tradovate allows per client address in a rolling hour"),
    Setting("ORCA_RENEW_LEAD_FLOOR", RENEW_LEAD_FLOOR_S, "while the renewals a budget group needs exceed its budget, renewals move later, down to this many seconds before expiry (jitter included), 120-900"),
    Setting("ORCA_BUDGET_GROUP", "default", "instances in one group share those budgets through Redis: one group per public /24 subnet (Tradovate counts per /24)"),
    Setting("ORCA_BUDGET_WINDOW", 3_600, "the budgets' rolling window, seconds (shorter only against the simulator, with its time-scale)"),
    Setting("ORCA_CAPTCHA_PARK", DEFAULT_CAPTCHA_PARK_S, "seconds a login waits after Tradovate asks for a captcha"),
    Setting("ORCA_TRADOVATE_TIMEOUT", TRADOVATE_TIMEOUT_S, "seconds any one Tradovate request may take"),
    Setting("ORCA_ALERT_WEBHOOK_URL", None, "Discord or Slack incoming webhook for failing/recovered alerts", secret=True),
    Setting("ORCA_AUDIT_DSN", None, "PostgreSQL DSN for token history", secret=True),
    Setting("ORCA_HEALTH_ADDR", "127.0.0.1:9108", "where `/metrics`, `/healthz`, `/readyz` listen; empty disables; port 0 picks one"),
    Setting("ORCA_PRICE_SYMBOLS", None, "comma-separated contracts (`MNQZ5`) or product roots (`MNQ`, resolved to the front month, rolled 7 days before expiry); set, the daemon runs the desk's one market-data feed into `price:{symbol}:latest`"),
    Setting("ORCA_PRICE_LOGIN", None, "whose `mdtoken:` authorizes the market-data socket (default: the first login)"),
    Setting("TRADOVATE_MD_URL", None, "the market-data websocket (default: from `TRADOVATE_ENV`, `wss://md-demo.tradovateapi.com/v1/websocket` or `wss://md.tradovateapi.com/v1/websocket`)"),
    Setting("ORCA_PRICE_LEGACY_CHANNELS", False, "also publish `{\"LAST\", \"TIMESTAMP\", \"INSTRUMENT\"}` on `TRADOVATE_{SYMBOL}_PRICE`, the desk bot's channels, for the cut-over"),
    Setting("ORCA_LOG_FORMAT", "auto", "`json`, `console` or `auto` (console on a TTY)"),
    Setting("ORCA_LOG_LEVEL", "info", "`debug`, `info`, `warning`, `error` or `critical`"),
    Setting("ORCA_LOG_FILE", None, "write logs to this file instead of stderr, rotated by size"),
    Setting("ORCA_LOG_MAX_BYTES", 10 * 1024 * 1024, "rotation size of `ORCA_LOG_FILE`"),
    Setting("ORCA_LOG_BACKUPS", 5, "rotated files kept"),
    Setting("ORCA_HOME", None, "nohup launcher: the checkout it runs from (default: its own)", reader="launcher"),
    Setting("ORCA_BIN", None, "nohup launcher: the `orca-tokens` to run (default: `$ORCA_HOME/.venv/bin/orca-tokens`)", reader="launcher"),
    Setting("ORCA_STATE_DIR", None, "nohup launcher: pidfile and logs (default: `${XDG_STATE_HOME:-~/.local/state}/orca-token-daemon`)", reader="launcher"),
    Setting("ORCA_RUN_DIR", None, "nohup launcher: the pidfile's folder (default: `$ORCA_STATE_DIR/run`)", reader="launcher"),
    Setting("ORCA_LOG_DIR", None, "nohup launcher: the logs' folder (default: `$ORCA_STATE_DIR/logs`)", reader="launcher"),
    Setting("ORCA_STOP_TIMEOUT", 15, "nohup launcher: seconds `stop` waits before SIGKILL", reader="launcher"),
)  # fmt: skip
REGISTRY: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}
# Set by the service manager, not by an operator: known, never flagged.
FROM_THE_SERVICE_MANAGER = (
    "CREDENTIALS_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
)


def setting(name: str) -> Setting:
    """The registered setting read as `name` (a password variable, or a secret's `_FILE`)."""
    if name in REGISTRY:
        return REGISTRY[name]
    base = name.removesuffix(SECRET_FILE_SUFFIX)
    if base.startswith(PASSWORD_VARIABLE_PREFIX):
        return REGISTRY["TRADOVATE_PASSWORD_<NAME>"]
    found = REGISTRY.get(base)
    if found is None:
        raise KeyError(f"{name} is read by the code but not registered in daemon/registry.py")
    if base != name and not found.secret:
        raise KeyError(f"{name}: only secrets may be read from a file")
    return found


def is_known(name: str) -> bool:
    try:
        setting(name)
    except KeyError:
        return False
    return True


def unknown_variables(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Variables that look like ours (REDIS_*, ORCA_*, TRADOVATE_*) but are not: each with the
    closest known name, for a typo such as REDIS_PASWORD."""
    names = [s.name for s in SETTINGS if "<" not in s.name]
    names += [f"{s.name}{SECRET_FILE_SUFFIX}" for s in SETTINGS if s.secret and "<" not in s.name]
    found = []
    for name in sorted(env):
        if name.startswith(PREFIXES) and not is_known(name):
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
            found.append((name, close[0] if close else None))
    return found


def markdown_table(settings: Iterable[Setting] = SETTINGS) -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for entry in settings:
        default = "unset" if entry.default is None else f"`{entry.default_text}`"
        secret = " (secret; `_FILE` works)" if entry.secret else ""
        rows.append(f"| `{entry.name}` | {default} | {entry.meaning}{secret} |")
    return "\n".join(rows)


def help_text() -> str:
    width = max(len(entry.name) for entry in SETTINGS)
    lines = [f"  {entry.name.ljust(width)}  {_plain(entry.meaning)}" for entry in SETTINGS]
    return "\n".join(lines)


def _plain(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"\1", text)
