"""`orca-tokens` (same as `python -m daemon`): the daemon and the operator's verbs, which replace
the reference's utility scripts. Every read command takes --json.

Exit codes: 0 success, 1 the operation failed, 2 usage, 78 configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
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
    read_environment_with_sources,
    unsafe_choices,
)
from daemon.constants import (
    PRICE_TTL_S,
    STATUS_KEY_PREFIX,
)
from daemon.logs import configure_logging, register_secrets
from daemon.registry import help_text, setting
from daemon.store import cache, price, tokens
from daemon.store.client import get_redis_client, scan_batches, server_info
from daemon.store.heartbeat import live_instances
from daemon.store.requests import await_answer, push_request
from daemon.views.table import table

log = structlog.get_logger("daemon.cli")

EX_FAILED = 1
EPILOG = f"""\
environment variables (a .env in the working directory, or ORCA_ENV_FILE, is read first; the
real environment wins; every secret also reads from NAME_FILE):
{help_text()}

exit codes: 0 success; 1 the operation failed (`run --once` with a failed login, `health` not
ready, `status` with a login not valid); 2 usage; 3 `status` finds no live daemon; 78
configuration error. README has the rest.
"""
REFRESH_ANSWER_WAIT_S = 30.0
STATUS_WATCH_EVERY_S = 2.0
SUCCESSFUL_OUTCOMES = ("login", "renew", "kept")

Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


class CommandFailed(Exception):
    """The operation failed: a one-line message for the operator, exit 1."""


def _settings(env: Mapping[str, str], *, credentials: bool) -> Settings:
    settings = load_settings(env, credentials=credentials)
    register_secrets(*settings.secrets())
    configure_logging(
        settings.log_format,
        settings.log_level,
        file=settings.log_file,
        max_bytes=settings.log_max_bytes,
        backups=settings.log_backups,
    )
    for event, fields in unsafe_choices(settings):
        log.warning(event, **fields)
    return settings


def _client(env: Mapping[str, str]) -> tuple[Settings, redis.Redis]:
    settings = _settings(env, credentials=False)
    return settings, get_redis_client(settings.redis)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


# -- the daemon ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.service.daemon import Daemon

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
    from daemon.sim.demo import run_demo

    return run_demo(duration_s=args.duration)


# -- check, accounts, info, health -----------------------------------------------------------


def cmd_check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.views.check import check_report, render_check

    settings, client = _client(env)
    report = check_report(
        client,
        [login.name for login in settings.logins],
        target=settings.redis.target(),
        now=time.time(),
    )
    _print_json(report) if args.json else print(render_check(report))
    return 0 if report["ok"] else EX_FAILED


def _known_logins(settings: Settings, client: redis.Redis) -> list[str]:
    """The configured logins, or else every login the daemon has written a status for."""
    if settings.logins:
        return [login.name for login in settings.logins]
    names = []
    for chunk in scan_batches(client, STATUS_KEY_PREFIX + "*"):
        names += [key[len(STATUS_KEY_PREFIX) :] for key in chunk]
    return sorted(names)


def cmd_accounts(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.tradovate import TradovateClient, TradovateError

    settings, client = _client(env)
    tradovate = TradovateClient(settings.tradovate)
    now = time.time()
    rows: list[dict[str, Any]] = []
    for login, (token, state) in tokens.login_tokens(
        client, _known_logins(settings, client), now
    ).items():
        row: dict[str, Any] = {
            "login": login,
            "token": state,
            "fingerprint": tokens.fingerprint(token) if token else None,
            "accounts": [],
            "error": None if state.usable else f"{state} token in Redis",
        }
        if token is not None and state.usable:
            try:
                row["accounts"] = [
                    {"id": a.id, "name": a.name, "active": a.active}
                    for a in tradovate.list_accounts(token)
                ]
            except TradovateError as error:
                row["error"] = str(error)
        rows.append(row)
    tradovate.close()
    if args.json:
        _print_json(rows)
    else:
        for row in rows:
            if row["error"]:
                print(f"{row['login']}: ❌ {row['error']}")
                continue
            print(f"{row['login']} (token {row['fingerprint']}):")
            for account in row["accounts"]:
                active = "active" if account["active"] else "inactive"
                print(f"  → {account['name']} (id {account['id']}, {active})")
        if not rows:
            print("no logins configured or seen in Redis")
    return 0 if rows and not any(row["error"] for row in rows) else EX_FAILED


def cmd_info(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """The reference's Monitoring section; one entry per node on a Redis Cluster."""
    _, client = _client(env)
    sections = {s: server_info(client, s) for s in ("memory", "clients", "keyspace", "server")}
    nodes = {
        node: {
            "redis_version": sections["server"][node].get("redis_version"),
            "used_memory": sections["memory"][node].get("used_memory_human"),
            "max_memory": sections["memory"][node].get("maxmemory_human"),
            "connected_clients": sections["clients"][node].get("connected_clients"),
            "keyspace": sections["keyspace"][node],
        }
        for node in sections["server"]
    }
    if args.json:
        _print_json(next(iter(nodes.values())) if len(nodes) == 1 else {"nodes": nodes})
        return 0
    for node, info in nodes.items():
        print(f"Redis {info['redis_version']} at {node}")
        print(f"Used Memory: {info['used_memory']}")
        print(f"Max Memory: {info['max_memory']}")
        print(f"Active connections: {info['connected_clients']}")
        print(f"Database info: {json.dumps(info['keyspace'])}")
    return 0


def cmd_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """One row per login and a summary; exit 0 all valid, 1 any not, 3 no live daemon."""
    from daemon.views.status import render_status, status_report

    settings, client = _client(env)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while True:
        report = status_report(client, _known_logins(settings, client))
        if args.json:
            _print_json(report.as_dict())
        else:
            if args.watch:
                print("\033[H\033[2J", end="")  # home and clear, as watch(1) does
            print(render_status(report), flush=True)
        if not args.watch:
            return report.exit_code
        try:
            if stop.wait(STATUS_WATCH_EVERY_S):
                return report.exit_code
        except KeyboardInterrupt:
            return report.exit_code


def cmd_doctor(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Checks configuration and reachability without logging in or writing (exit 0/1/78)."""
    from daemon.cli.doctor import render_doctor, run_doctor

    _, sources = read_environment_with_sources()
    report = run_doctor(env, sources)
    _print_json(report.as_dict()) if args.json else print(render_doctor(report))
    return report.exit_code


def cmd_health(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Ready: the local daemon's /readyz says 200, or, with the health endpoint disabled or not
    answering, Redis answers and every configured login has a valid token there."""
    settings, client = _client(env)
    body: dict[str, Any]
    if settings.health_addr is not None:
        host, port = settings.health_addr
        host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host  # noqa: S104 (a client)
        url = f"http://[{host}]:{port}/readyz" if ":" in host else f"http://{host}:{port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (our http URL)
                body, ready = json.load(response), True
        except urllib.error.HTTPError as error:
            body, ready = json.load(error), False
        except (OSError, ValueError) as error:
            body, ready = {"error": f"{url}: {error}"}, False
    else:
        now = time.time()
        names = [login.name for login in settings.logins]
        states = {n: state for n, (_, state) in tokens.login_tokens(client, names, now).items()}
        ready = bool(names) and all(state.usable for state in states.values())
        body = {"ready": ready, "logins": states}
    if args.json:
        _print_json(body)
    else:
        from daemon.views.status import status_report

        summary = status_report(client, _known_logins(settings, client)).summary()
        print(f"{'ready' if ready else 'not ready'}: {summary}")
    return 0 if ready else EX_FAILED


# -- tokens ----------------------------------------------------------------------------------


def cmd_tokens_list(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = _client(env)
    found = sorted(tokens.iter_tokens(client=client), key=lambda t: t.name)
    if args.json:
        _print_json([vars(t) for t in found])
    else:
        rows = [(f"token:{t.name}", f"{t.ttl_s}s", t.state, t.fingerprint) for t in found]
        print(table(rows, ("key", "ttl", "state", "fingerprint")))
        print(f"\nTotal tokens: {len(found)}")
    return 0


def cmd_tokens_get(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = _client(env)
    token = tokens.get_token(args.name, client=client)
    if token is None:
        raise CommandFailed(f"no token for {args.name}")
    print(token)  # the one token asked for, alone on its line, for scripts
    return 0


def cmd_tokens_ttl(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = _client(env)
    ttl = tokens.token_ttl(args.name, client=client)
    if args.json:
        _print_json({"name": args.name, "ttl_s": ttl, "exists": ttl != -2})
    elif ttl >= 0:
        print(f"{ttl} ({ttl / 3600:.2f}h)")
    else:
        print("no expiration" if ttl == -1 else "no such token")
    return 0 if ttl != -2 else EX_FAILED


def cmd_tokens_delete(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = _client(env)
    if not tokens.delete_token(args.name, client=client):
        raise CommandFailed(f"no token for {args.name}")
    print(
        f"deleted token:{args.name} and mdtoken:{args.name}. A running daemon writes back the "
        f"token it holds within seconds; `orca-tokens tokens refresh` gets a new one."
    )
    return 0


def cmd_tokens_refresh(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Ask the running daemons (each login's owner) through Redis; refresh here when none runs."""
    settings, client = _client(env)
    names = [login.name for login in settings.logins]
    # After a 401 a program names the account it traded on; the daemon finds its login.
    if args.name is not None and names and args.name not in names and not args.after_401:
        raise CommandFailed(f"{args.name} is not a configured login ({', '.join(names)})")
    daemons = [beat.instance for beat in live_instances(client) if not beat.standby]
    if daemons:
        asked = names if args.name is None else [args.name]
        outcomes = _ask_daemons(client, daemons, asked, probe=args.after_401)
    else:
        outcomes = _refresh_here(env, args.name, probe=args.after_401)
    for name, outcome in outcomes.items():
        mark = "✅" if outcome in SUCCESSFUL_OUTCOMES else "❌"
        print(f"{mark} {name}: {outcome}")
    return 0 if all(o in SUCCESSFUL_OUTCOMES for o in outcomes.values()) else EX_FAILED


def _ask_daemons(
    client: redis.Redis, daemons: list[str], logins: list[str], *, probe: bool
) -> dict[str, str]:
    """One request per login, answered by its owner, all waited for together."""
    requests = {login: push_request(client, login, probe=probe) for login in logins}
    what = "check (after a 401)" if probe else "refresh"
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


def _refresh_here(env: Mapping[str, str], login: str | None, *, probe: bool) -> dict[str, str]:
    from daemon.service.daemon import Daemon, LoginsHeld

    print("no daemon is running: refreshing here")
    daemon = Daemon(_settings(env, credentials=True))
    try:
        if login is not None:
            resolved = daemon.login_of(login)
            if resolved is None:
                raise CommandFailed(f"{login} is neither a configured login nor its account")
            login = resolved
        attempts = daemon.refresh_once(None if login is None else [login], verify=probe)
    except LoginsHeld as running:
        raise CommandFailed(str(running)) from None
    return {name: attempt.outcome for name, attempt in attempts.items()}


# -- cache and prices ------------------------------------------------------------------------


def cmd_cache_stats(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = _client(env)
    stats = cache.stats(client=client)
    if args.json:
        _print_json(stats)
    else:
        print(table(sorted(stats.items(), key=lambda kv: kv[0] == "total"), ("endpoint", "keys")))
    return 0


def cmd_cache_clear(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = _client(env)
    try:
        removed = cache.clear(args.endpoint, client=client)
    except ValueError as error:
        raise CommandFailed(str(error)) from None
    print(f"removed {removed} key{'s' if removed != 1 else ''} from hft:{args.endpoint or '*'}")
    return 0


def _price_line(symbol: str, data: Mapping[str, Any]) -> str:
    def money(field: str) -> str:
        value = data.get(field)
        return f"${value:.2f}" if isinstance(value, int | float) else "-"

    return f"{symbol}: {money('Last')} | Bid: {money('Bid')} | Ask: {money('Ask')}"


def cmd_price_get(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = _client(env)
    data = price.latest(args.symbol, client=client)
    if data is None:
        raise CommandFailed(f"no price for {args.symbol} (price keys live {PRICE_TTL_S} s)")
    _print_json(data) if args.json else print(_price_line(args.symbol, data))
    return 0


def cmd_price_stream(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = _client(env)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    seen = 0
    try:
        for update in price.stream(args.symbol, client=client, stop=stop):
            line = json.dumps(update) if args.json else _price_line(args.symbol, update)
            print(line, flush=True)
            seen += 1
            if args.count is not None and seen >= args.count:
                break
    except KeyboardInterrupt:
        pass
    return 0


# -- sync ------------------------------------------------------------------------------------


def cmd_sync(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.sinks.audit import connect, records_from_redis, write

    settings, client = _client(env)
    if settings.audit_dsn is None:
        raise ConfigError(["ORCA_AUDIT_DSN: is not set (the PostgreSQL to sync into)"])
    records = list(records_from_redis(client, include_token=args.include_token))
    try:
        connection = connect(settings.audit_dsn.reveal())
    except RuntimeError as error:
        raise CommandFailed(str(error)) from None
    except Exception as error:  # psycopg.Error, without importing psycopg up front
        raise CommandFailed(f"cannot reach PostgreSQL: {error}") from None
    with connection:
        inserted = write(connection, records)
    print(f"synced {len(records)} tokens: {inserted} new, {len(records) - inserted} already there")
    return 0


# -- parsing ---------------------------------------------------------------------------------


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
            "permissions for it: see README, 'Redis ACL'",
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
