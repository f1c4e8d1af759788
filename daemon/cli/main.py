"""`orca-tokens` (same as `python -m daemon`): the daemon and the operator's verbs, which replace
the reference's utility scripts. Every read command takes --json.

Exit codes: 0 success, 1 the operation failed, 2 usage, 78 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import redis
import structlog

from daemon import __version__
from daemon.cli.common import EX_FAILED, CommandFailed, Handler
from daemon.cli.data import (
    cmd_cache_clear,
    cmd_cache_stats,
    cmd_price_get,
    cmd_price_stream,
    cmd_sync,
)
from daemon.cli.reports import cmd_accounts, cmd_check, cmd_doctor, cmd_health, cmd_info, cmd_status
from daemon.cli.run import cmd_demo, cmd_run
from daemon.cli.tokens import (
    cmd_tokens_delete,
    cmd_tokens_get,
    cmd_tokens_list,
    cmd_tokens_refresh,
    cmd_tokens_ttl,
)
from daemon.config import (
    EX_CONFIG,
    LOG_FORMATS,
    LOG_LEVELS,
    ConfigError,
    load_settings,
    read_environment,
)
from daemon.logs import configure_logging
from daemon.registry import help_text, setting

log = structlog.get_logger("daemon.cli")

EPILOG = f"""\
environment variables (a .env in the working directory, or ORCA_ENV_FILE, is read first; the
real environment wins; every secret also reads from NAME_FILE):
{help_text()}

exit codes: 0 success; 1 the operation failed (`run --once` with a failed login, `health` not
ready, `status` with a login not valid); 2 usage; 3 `status` finds no live daemon; 78
configuration error. README and docs/ have the rest.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orca-tokens",
        description="Keeps a valid Tradovate access token for every login in Redis.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    def verb(
        group: Any, name: str, handler: Handler, help_text: str, *, json_flag: bool = False
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=help_text)
        sub.set_defaults(handler=handler)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        return sub

    run = verb(verbs, "run", cmd_run, "run the daemon (or one pass with --once)")
    run.add_argument(
        "--once", action="store_true", help="refresh every login once; 1 if any failed"
    )
    demo = verb(verbs, "demo", cmd_demo, "the daemon on an embedded Redis and simulated Tradovate")
    demo.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    status = verb(verbs, "status", cmd_status, "one row per login (exit 0/1/3)", json_flag=True)
    status.add_argument("--watch", action="store_true", help="redraw every 2 s until Ctrl-C")
    verb(
        verbs, "doctor", cmd_doctor, "check settings and reachability (exit 0/1/78)", json_flag=True
    )
    verb(verbs, "check", cmd_check, "every key in Redis, as check_all_redis.py", json_flag=True)
    verb(verbs, "accounts", cmd_accounts, "each login's accounts from Tradovate", json_flag=True)
    verb(verbs, "info", cmd_info, "Redis memory, clients and keyspace", json_flag=True)
    verb(verbs, "health", cmd_health, "exit 0 when ready (container HEALTHCHECK)", json_flag=True)
    sync = verb(verbs, "sync", cmd_sync, "token history into PostgreSQL (ORCA_AUDIT_DSN)")
    sync.add_argument("--include-token", action="store_true", help="store raw tokens too")

    token_verbs = verbs.add_parser("tokens", help="token keys").add_subparsers(
        dest="tokens_verb", required=True, metavar="ACTION"
    )
    verb(token_verbs, "list", cmd_tokens_list, "every token key (no values)", json_flag=True)
    verb(token_verbs, "get", cmd_tokens_get, "print one token").add_argument("name")
    verb(token_verbs, "ttl", cmd_tokens_ttl, "seconds left", json_flag=True).add_argument("name")
    verb(token_verbs, "delete", cmd_tokens_delete, "delete a token key").add_argument("name")
    refresh = verb(token_verbs, "refresh", cmd_tokens_refresh, "renew now")
    refresh.add_argument("name", nargs="?")
    refresh.add_argument(
        "--after-401",
        action="store_true",
        help="a program got 401 with this token: check it with Tradovate first, replace it "
        "only if refused (spends nothing when it is alive)",
    )

    cache_verbs = verbs.add_parser("cache", help="the hft: cache").add_subparsers(
        dest="cache_verb", required=True, metavar="ACTION"
    )
    verb(cache_verbs, "stats", cmd_cache_stats, "keys per endpoint", json_flag=True)
    clear = verb(cache_verbs, "clear", cmd_cache_clear, "delete one endpoint's keys, or all")
    clear.add_argument("endpoint", nargs="?")

    price_verbs = verbs.add_parser("price", help="latest prices").add_subparsers(
        dest="price_verb", required=True, metavar="ACTION"
    )
    verb(price_verbs, "get", cmd_price_get, "the latest price", json_flag=True).add_argument(
        "symbol"
    )
    stream = verb(price_verbs, "stream", cmd_price_stream, "follow prices", json_flag=True)
    stream.add_argument("symbol")
    stream.add_argument("--count", type=int, metavar="N", help="stop after N updates")
    return parser


def _lenient(value: str | None, choices: tuple[str, ...], default: str) -> str:
    """Logging must work before the configuration is validated, to report what is wrong."""
    value = (value or "").strip().lower()
    return value if value in choices else default


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:  # bare `orca-tokens`: say what it can do
        parser.print_help()
        return 0
    env = read_environment()
    configure_logging(
        _lenient(env.get("ORCA_LOG_FORMAT"), LOG_FORMATS, str(setting("ORCA_LOG_FORMAT").default)),
        _lenient(env.get("ORCA_LOG_LEVEL"), LOG_LEVELS, str(setting("ORCA_LOG_LEVEL").default)),
    )
    handler: Handler = args.handler
    try:
        return handler(args, env)
    except ConfigError as error:
        log.error("config.invalid", error=str(error), problems=error.problems)
        return EX_CONFIG
    except CommandFailed as error:
        print(f"orca-tokens: {error}", file=sys.stderr)
        return EX_FAILED
    except redis.exceptions.NoPermissionError as error:
        print(
            f"orca-tokens: Redis refused this command ({error}); the ACL user needs more "
            "permissions for it: see docs/deploy.md#redis-acl",
            file=sys.stderr,
        )
        return EX_FAILED
    except redis.RedisError as error:
        print(f"orca-tokens: Redis at {_target(env)}: {error}", file=sys.stderr)
        return EX_FAILED


def _target(env: Mapping[str, str]) -> str:
    try:
        return load_settings(env, credentials=False).redis.target()
    except ConfigError:
        return "(unknown)"
