"""The data verbs: the hft: cache, latest prices, and token history into PostgreSQL."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from daemon.cli.common import CommandFailed, command_client, print_json, stop_on_signals
from daemon.config import ConfigError
from daemon.constants import PRICE_TTL_S
from daemon.store import cache, price
from daemon.views.table import table


def cmd_cache_stats(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = command_client(env)
    stats = cache.stats(client=client)
    if args.json:
        print_json(stats)
    else:
        print(table(sorted(stats.items(), key=lambda kv: kv[0] == "total"), ("endpoint", "keys")))
    return 0


def cmd_cache_clear(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = command_client(env)
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
    _, client = command_client(env)
    data = price.latest(args.symbol, client=client)
    if data is None:
        raise CommandFailed(f"no price for {args.symbol} (price keys live {PRICE_TTL_S} s)")
    print_json(data) if args.json else print(_price_line(args.symbol, data))
    return 0


def cmd_price_stream(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    _, client = command_client(env)
    stop = stop_on_signals()
    for seen, update in enumerate(price.stream(args.symbol, client=client, stop=stop), 1):
        line = json.dumps(update) if args.json else _price_line(args.symbol, update)
        print(line, flush=True)
        if args.count is not None and seen >= args.count:
            break
    return 0


# -- sync ------------------------------------------------------------------------------------


def cmd_sync(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from daemon.sinks.audit import connect, records_from_redis, write

    settings, client = command_client(env)
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
