"""What every verb shares: settings built once (secrets registered, logging set up, unsafe
choices said), the Redis client, JSON output, the one-line failure, and which logins to show."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis
import structlog

from daemon.config import Settings, load_settings, unsafe_choices
from daemon.constants import STATUS_KEY_PREFIX
from daemon.logs import configure_logging, register_secrets
from daemon.store.client import get_redis_client, scan_batches

log = structlog.get_logger("daemon.cli")

EX_FAILED = 1

Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


class CommandFailed(Exception):
    """The operation failed: a one-line message for the operator, exit 1."""


def command_settings(env: Mapping[str, str], *, credentials: bool) -> Settings:
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


def command_client(env: Mapping[str, str]) -> tuple[Settings, redis.Redis]:
    settings = command_settings(env, credentials=False)
    return settings, get_redis_client(settings.redis)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for verbs that run until stopped. Installed by hand:
    started from a script's background job, SIGINT is ignored and Python raises no
    KeyboardInterrupt, yet Ctrl-C and `kill -INT` must still stop the verb."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


INTERRUPT_GRACE_S = 1.5  # after SIGTERM/SIGINT, a one-off verb's work gets this long to end


def run_interruptible(work: Callable[[], int], *, on_stop: Callable[[], None]) -> int:
    """Run a one-off verb's `work` (`run --once`, `tokens refresh`) so that SIGTERM or SIGINT
    ends the process within two seconds whatever Tradovate is doing: `on_stop` asks the work to
    stop (no new request starts), and what is still waiting for an answer after the grace is
    abandoned (exit 1; leases it held lapse within their TTL)."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    stop = stop_on_signals()
    try:
        return _interruptible(work, stop, on_stop)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _interruptible(
    work: Callable[[], int], stop: threading.Event, on_stop: Callable[[], None]
) -> int:
    outcome: list[int] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # re-raised on the main thread below
            failure.append(error)

    worker = threading.Thread(target=target, name="one-off", daemon=True)
    worker.start()
    while worker.is_alive() and not stop.wait(0.1):
        pass
    if stop.is_set():
        on_stop()
        worker.join(INTERRUPT_GRACE_S)
        if worker.is_alive():
            log.warning("cli.interrupted", hint="stopped before Tradovate answered; run it again")
            logging.shutdown()
            os._exit(EX_FAILED)
    worker.join()
    if failure:
        raise failure[0]
    return outcome[0] if outcome else EX_FAILED


def known_logins(settings: Settings, client: redis.Redis) -> list[str]:
    """The configured logins, or else every login the daemon has written a status for."""
    if settings.logins:
        return [login.name for login in settings.logins]
    names = []
    for chunk in scan_batches(client, STATUS_KEY_PREFIX + "*"):
        names += [key[len(STATUS_KEY_PREFIX) :] for key in chunk]
    return sorted(names)
