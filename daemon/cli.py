"""`orca-tokens` (same as `python -m daemon`): the daemon and the operator's verbs.

Exit codes: 0 success, 1 the operation failed, 2 usage, 78 configuration error.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Mapping, Sequence

import structlog

from daemon import __version__
from daemon.config import (
    EX_CONFIG,
    LOG_FORMATS,
    LOG_LEVELS,
    ConfigError,
    Settings,
    load_settings,
    read_environment,
)
from daemon.logs import configure_logging, register_secrets

log = structlog.get_logger("daemon.cli")

Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


def _settings(env: Mapping[str, str], *, credentials: bool) -> Settings:
    settings = load_settings(env, credentials=credentials)
    register_secrets(*settings.secrets())
    configure_logging(settings.log_format, settings.log_level)
    return settings


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.service import Daemon

    daemon = Daemon(_settings(env, credentials=True))
    daemon.install_signal_handlers()
    if args.once:
        return daemon.run_once()
    code = daemon.run()
    if daemon.abandoned_jobs:
        # Pool threads still stuck in a refresh would hold the interpreter open past the budget.
        logging.shutdown()
        os._exit(code)
    return code


def cmd_demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.demo import run_demo

    return run_demo(duration_s=args.duration)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orca-tokens",
        description="Keeps a valid Tradovate access token for every login in Redis.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    run = verbs.add_parser("run", help="run the daemon (or one pass with --once)")
    run.add_argument(
        "--once", action="store_true", help="refresh every login once; exit 1 if any failed"
    )
    run.set_defaults(handler=cmd_run)

    demo = verbs.add_parser(
        "demo", help="the daemon against an embedded Redis and a simulated Tradovate"
    )
    demo.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )
    demo.set_defaults(handler=cmd_demo)
    return parser


def _lenient(value: str | None, choices: tuple[str, ...], default: str) -> str:
    """Logging must work before the configuration is validated, to report what is wrong."""
    value = (value or "").strip().lower()
    return value if value in choices else default


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = read_environment()
    configure_logging(
        _lenient(env.get("ORCA_LOG_FORMAT"), LOG_FORMATS, "auto"),
        _lenient(env.get("ORCA_LOG_LEVEL"), LOG_LEVELS, "info"),
    )
    handler: Handler = args.handler
    try:
        return handler(args, env)
    except ConfigError as error:
        log.error("config.invalid", error=str(error), problems=error.problems)
        return EX_CONFIG
