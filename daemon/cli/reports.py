"""The read-only verbs that report: status, doctor, check, accounts, info, health. Each builds a
report (`daemon.views`) and renders it, or prints it as JSON."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

from daemon.cli.common import EX_FAILED, command_client, known_logins, print_json, stop_on_signals
from daemon.config import read_environment_with_sources

STATUS_WATCH_EVERY_S = 2.0


def cmd_check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.views.check import check_report, render_check

    settings, client = command_client(env)
    report = check_report(
        client,
        [login.name for login in settings.logins],
        target=settings.redis.target(),
        now=time.time(),
    )
    print_json(report) if args.json else print(render_check(report))
    return 0 if report["ok"] else EX_FAILED


def cmd_accounts(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.tradovate import TradovateClient
    from daemon.views.accounts import accounts_report, render_accounts

    settings, client = command_client(env)
    tradovate = TradovateClient(settings.tradovate)
    try:
        rows = accounts_report(client, tradovate, known_logins(settings, client), time.time())
    finally:
        tradovate.close()
    print_json(rows) if args.json else print(render_accounts(rows))
    return 0 if rows and not any(row["error"] for row in rows) else EX_FAILED


def cmd_info(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The reference's Monitoring section; one entry per node on a Redis Cluster."""
    from daemon.views.info import info_report, render_info

    _, client = command_client(env)
    nodes = info_report(client)
    if args.json:
        print_json(next(iter(nodes.values())) if len(nodes) == 1 else {"nodes": nodes})
    else:
        print(render_info(nodes))
    return 0


def cmd_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """One row per login and a summary; exit 0 all valid, 1 any not, 3 no live daemon."""
    from daemon.views.status import render_status, status_report

    settings, client = command_client(env)
    stop = stop_on_signals()
    while True:
        report = status_report(client, known_logins(settings, client))
        if args.json:
            print_json(report.as_dict())
        else:
            if args.watch:
                print("\033[H\033[2J", end="")  # home and clear, as watch(1) does
            print(render_status(report), flush=True)
        if not args.watch:
            return report.exit_code
        if stop.wait(STATUS_WATCH_EVERY_S):
            return report.exit_code


def cmd_doctor(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Checks configuration and reachability without logging in or writing (exit 0/1/78)."""
    from daemon.cli.doctor import render_doctor, run_doctor

    _, sources = read_environment_with_sources()
    report = run_doctor(env, sources)
    print_json(report.as_dict()) if args.json else print(render_doctor(report))
    return report.exit_code


def cmd_health(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Ready: the local daemon's /readyz says 200, or, with the health endpoint disabled or not
    answering, Redis answers and every configured login has a valid token there."""
    from daemon.views.health import health_report
    from daemon.views.status import status_report

    settings, client = command_client(env)
    ready, body = health_report(settings, client)
    if args.json:
        print_json(body)
    else:
        summary = status_report(client, known_logins(settings, client)).summary()
        print(f"{'ready' if ready else 'not ready'}: {summary}")
    return 0 if ready else EX_FAILED
