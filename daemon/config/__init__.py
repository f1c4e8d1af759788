"""Configuration, read once at the edge into frozen dataclasses whose repr masks secrets.

Every setting comes from the environment; a `.env` file (or the one named by ORCA_ENV_FILE) is read
first and the real environment wins (`environment`). Secrets may also come from files: `NAME_FILE`
beside `NAME`, relative to $CREDENTIALS_DIRECTORY (systemd LoadCredential=) when that is set
(`reader`). The shape is in `model`, the logins in `accounts`, the building in `load`, and what a
valid configuration still exposes in `checks`.
"""

from daemon.config.accounts import LOGIN_NAME, password_variable
from daemon.config.checks import is_loopback, loose_credential_files, unsafe_choices
from daemon.config.environment import read_environment, read_environment_with_sources
from daemon.config.load import load_redis_settings, load_settings
from daemon.config.model import (
    EX_CONFIG,
    LOG_FORMATS,
    LOG_LEVELS,
    LOGIN_ROUTES,
    WHEN_BUDGET_SHORT,
    ConfigError,
    Login,
    PriceSettings,
    RedisSettings,
    Settings,
    TradovateSettings,
    host_and_port,
)
from daemon.config.secret import Secret

__all__ = [
    "EX_CONFIG",
    "LOGIN_NAME",
    "LOGIN_ROUTES",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "WHEN_BUDGET_SHORT",
    "ConfigError",
    "Login",
    "PriceSettings",
    "RedisSettings",
    "Secret",
    "Settings",
    "TradovateSettings",
    "host_and_port",
    "is_loopback",
    "load_redis_settings",
    "load_settings",
    "loose_credential_files",
    "password_variable",
    "read_environment",
    "read_environment_with_sources",
    "unsafe_choices",
]
