"""`run` (the daemon, or one pass with --once) and `demo`."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping

from daemon.cli.common import command_settings, run_interruptible
from daemon.config import LOGIN_ROUTES, ConfigError


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.service.daemon import Daemon

    daemon = Daemon(command_settings(env, credentials=True))
    if args.once:
        return run_interruptible(daemon.run_once, on_stop=daemon.request_stop)
    daemon.install_signal_handlers()
    code = daemon.run()
    if daemon.abandoned_jobs:
        # Pool threads still stuck in a refresh would hold the interpreter open past the budget.
        logging.shutdown()
        os._exit(code)
    return code


def cmd_demo(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.sim.demo import run_demo

    route = env.get("TRADOVATE_LOGIN", "").strip().lower() or "api"
    if route not in LOGIN_ROUTES:
        raise ConfigError([f"TRADOVATE_LOGIN: {route!r} is not one of {', '.join(LOGIN_ROUTES)}"])
    return run_demo(duration_s=args.duration, route=route)
