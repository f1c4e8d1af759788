"""`run` (the daemon, or one pass with --once) and `demo`."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping

from daemon.cli.common import command_settings


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.service.daemon import Daemon

    daemon = Daemon(command_settings(env, credentials=True))
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
    from daemon.sim.demo import run_demo

    return run_demo(duration_s=args.duration)
