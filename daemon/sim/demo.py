"""`orca-tokens demo`: the real daemon against an embedded Redis and a simulated Tradovate with
the reference's four logins and 13 accounts, printing the token keys as they are written."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from daemon.config import load_settings
from daemon.logs import register_secrets
from daemon.service.daemon import Daemon
from daemon.sim.environment import daemon_environment
from daemon.sim.redis_server import start_embedded_redis
from daemon.sim.tradovate import FakeTradovate, reference_desk
from daemon.store import price
from daemon.store.client import close_redis_client, get_redis_client
from daemon.views.check import render_token_table, token_rows

DEMO_TOKEN_LIFETIME_S = 32.0  # renewed "15 minutes" (of 80) before expiry: within 30 s
DEMO_TABLE_EVERY_S = 5.0
DEMO_SYMBOLS = ("MNQ", "ES")  # product roots: the front month is resolved, as at the desk


def run_demo(
    duration_s: float | None = None, out: TextIO = sys.stdout, *, route: str = "api"
) -> int:
    """`route` is TRADOVATE_LOGIN's: "tradingview" logs the desk in with names and passwords."""
    embedded = start_embedded_redis()
    fake = FakeTradovate(reference_desk(), token_lifetime_s=DEMO_TOKEN_LIFETIME_S).start()
    try:
        env = daemon_environment(
            fake.base_url,
            fake.users.values(),
            embedded.url,
            sec=fake.sec,
            budget_window_s=fake.budget_window_s,
            route=route,
            ORCA_REFRESH_INTERVAL="60",
            ORCA_HEALTH_ADDR="127.0.0.1:0",
            ORCA_PRICE_SYMBOLS=",".join(DEMO_SYMBOLS),
            TRADOVATE_MD_URL=fake.market.url,
        )
        settings = load_settings(env, credentials=True)
        register_secrets(*settings.secrets())
        daemon = Daemon(settings, redis_client=get_redis_client(settings.redis))
        daemon.install_signal_handlers()
        if duration_s is not None:
            threading.Timer(duration_s, daemon.request_stop).start()
        stop_printing = threading.Event()
        printer = threading.Thread(
            target=_print_tables,
            args=(daemon, out, stop_printing),
            name="demo-table",
            daemon=True,
        )
        out.write(
            f"orca-tokens demo: Redis at {embedded.url}, simulated Tradovate at {fake.base_url}\n"
            f"tokens live {DEMO_TOKEN_LIFETIME_S:.0f} s (80 min at Tradovate) and are renewed a "
            "scaled 15 minutes before they expire; the md token feeds live prices of "
            f"{', '.join(DEMO_SYMBOLS)}. Ctrl-C stops.\n"
        )
        out.flush()
        printer.start()
        code = daemon.run()
        stop_printing.set()
        printer.join(timeout=2)
        _print_table(daemon, out)
        sessions = ", ".join(f"{u}={n}" for u, n in sorted(fake.seen.sessions_opened.items()))
        out.write(f"sessions opened per login: {sessions}\n")
        return code
    finally:
        close_redis_client()
        fake.stop()
        embedded.stop()


def _print_tables(daemon: Daemon, out: TextIO, stop: threading.Event) -> None:
    while not stop.wait(DEMO_TABLE_EVERY_S):
        _print_table(daemon, out)


def _print_table(daemon: Daemon, out: TextIO) -> None:
    names = [login.name for login in daemon.settings.logins]
    try:
        rows = token_rows(
            daemon.redis, names, now=time.time(), expiring_within_s=DEMO_TOKEN_LIFETIME_S / 4
        )
    except Exception as exc:  # the demo keeps going whatever Redis does
        out.write(f"(Redis not readable: {type(exc).__name__})\n")
        return
    valid = sum(1 for row in rows if row.state in ("valid", "expiring"))
    out.write(f"\n{time.strftime('%H:%M:%S')}  token keys: {valid} valid of {len(rows)}\n")
    out.write(render_token_table(rows) + "\n")
    out.write(_prices_line(daemon) + "\n")
    out.flush()


def _prices_line(daemon: Daemon) -> str:
    """The live prices the feed writes, as a trading program reads them."""
    found = []
    for symbol in DEMO_SYMBOLS:
        latest = price.latest(symbol, client=daemon.redis)
        if latest is None:
            found.append(f"{symbol} -")
        else:
            found.append(f"{symbol} last {latest['Last']} bid {latest['Bid']} ask {latest['Ask']}")
    return "prices: " + "; ".join(found)
