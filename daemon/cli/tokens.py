"""The `tokens` verbs: list, get, ttl, delete, and refresh (asked of the running daemons through
Redis, or done here when none runs)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import redis

from daemon.cli.common import (
    EX_FAILED,
    CommandFailed,
    command_client,
    command_settings,
    print_json,
    run_interruptible,
)
from daemon.store import tokens
from daemon.store.heartbeat import live_instances
from daemon.store.requests import await_answer, push_request
from daemon.views.check import render_token_list

if TYPE_CHECKING:
    from daemon.service.daemon import Daemon

REFRESH_ANSWER_WAIT_S = 30.0
SUCCESSFUL_OUTCOMES = ("login", "renew", "kept")


def cmd_tokens_list(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = command_client(env)
    found = sorted(tokens.iter_tokens(client=client), key=lambda t: t.name)
    if args.json:
        print_json([vars(t) for t in found])
    else:
        print(render_token_list(found))
    return 0


def cmd_tokens_get(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = command_client(env)
    token = tokens.get_token(args.name, client=client)
    if token is None:
        raise CommandFailed(f"no token for {args.name}")
    print(token)  # the one token asked for, alone on its line, for scripts
    return 0


def cmd_tokens_ttl(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = command_client(env)
    ttl = tokens.token_ttl(args.name, client=client)
    if args.json:
        print_json({"name": args.name, "ttl_s": ttl, "exists": ttl != -2})
    elif ttl >= 0:
        print(f"{ttl} ({ttl / 3600:.2f}h)")
    else:
        print("no expiration" if ttl == -1 else "no such token")
    return 0 if ttl != -2 else EX_FAILED


def cmd_tokens_delete(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = command_client(env)
    if not tokens.delete_token(args.name, client=client):
        raise CommandFailed(f"no token for {args.name}")
    print(
        f"deleted token:{args.name} and mdtoken:{args.name}. A running daemon writes back the "
        f"token it holds within seconds; `orca-tokens tokens refresh` gets a new one."
    )
    return 0


def cmd_tokens_refresh(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Ask the running daemons (each login's owner) through Redis; refresh here when none runs.
    SIGTERM or SIGINT ends it within two seconds, whatever Tradovate is doing."""
    here: list[Daemon] = []

    def stop() -> None:
        for daemon in here:
            daemon.request_stop()

    return run_interruptible(lambda: _tokens_refresh(args, env, here), on_stop=stop)


def _tokens_refresh(args: argparse.Namespace, env: Mapping[str, str], here: list[Daemon]) -> int:
    settings, client = command_client(env)
    names = [login.name for login in settings.logins]
    # After a 401 a program names the account it traded on; the daemon finds its login.
    if args.name is not None and names and args.name not in names and not args.after_401:
        raise CommandFailed(f"{args.name} is not a configured login ({', '.join(names)})")
    daemons = [beat.instance for beat in live_instances(client) if not beat.standby]
    if daemons:
        asked = names if args.name is None else [args.name]
        outcomes = _ask_daemons(
            client, daemons, asked, verify=args.after_401, operator=args.name is not None
        )
    else:
        outcomes = _refresh_here(env, args.name, verify=args.after_401, here=here)
    for name, outcome in outcomes.items():
        mark = "✅" if outcome in SUCCESSFUL_OUTCOMES else "❌"
        print(f"{mark} {name}: {outcome}")
    return 0 if all(o in SUCCESSFUL_OUTCOMES for o in outcomes.values()) else EX_FAILED


def _ask_daemons(
    client: redis.Redis, daemons: list[str], logins: list[str], *, verify: bool, operator: bool
) -> dict[str, str]:
    """One request per login, answered by its owner, all waited for together. `operator`: a
    login named by hand may be tried at once though the rejected ladder holds it."""
    requests = {
        login: push_request(client, login, verify=verify, operator=operator) for login in logins
    }
    what = "check (after a 401)" if verify else "refresh"
    print(f"asked the running daemons ({', '.join(daemons)}) to {what} {', '.join(logins)}")
    outcomes: dict[str, str] = {}
    deadline = time.monotonic() + REFRESH_ANSWER_WAIT_S
    for login, request_id in requests.items():
        answered = await_answer(client, request_id, max(0.0, deadline - time.monotonic()))
        if answered is None:
            raise CommandFailed(
                f"no daemon answered for {login} within {REFRESH_ANSWER_WAIT_S:.0f} s"
            )
        outcomes.update(answered)
    return outcomes


def _refresh_here(
    env: Mapping[str, str], login: str | None, *, verify: bool, here: list[Daemon]
) -> dict[str, str]:
    from daemon.service.daemon import Daemon, LoginsHeld

    print("no daemon is running: refreshing here")
    daemon = Daemon(command_settings(env, credentials=True))
    here.append(daemon)
    try:
        if login is not None:
            resolved = daemon.login_of(login)
            if resolved is None:
                raise CommandFailed(f"{login} is neither a configured login nor its account")
            login = resolved
        attempts = daemon.refresh_once(
            None if login is None else [login], verify=verify, operator=login is not None
        )
    except LoginsHeld as running:
        raise CommandFailed(str(running)) from None
    return {name: attempt.described() for name, attempt in attempts.items()}
