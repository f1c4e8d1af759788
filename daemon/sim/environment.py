"""The one environment builder and the one wait helper of the demo, the tests, the benchmarks
and the chaos run: what a daemon needs to talk to the simulated Tradovate, and polling for a
condition with a deadline (never sleeping and hoping)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from daemon.config import password_variable
from daemon.sim.tradovate import BUDGET_WINDOW_S, DEMO_SEC, FakeUser

POLL_EVERY_S = 0.02


def daemon_environment(
    tradovate_url: str,
    users: Iterable[FakeUser],
    redis_url: str | None = None,
    *,
    sec: str = DEMO_SEC,
    budget_window_s: float = BUDGET_WINDOW_S,
    route: str = "api",
    **extra: str,
) -> dict[str, str]:
    """Settings for a daemon that logs in as `users` at the simulator on `tradovate_url`, with
    no health endpoint unless `extra` names one; `extra` wins over everything. A simulator on a
    shorter time-scale passes its budget window, so both count the same hour. `route`
    "tradingview" logs in with names and passwords alone: no API key is set at all."""
    users = list(users)
    env = {
        "TRADOVATE_BASE_URL": tradovate_url,
        "TRADOVATE_TV_BASE_URL": tradovate_url.removesuffix("/v1"),  # the simulator serves both
        "ORCA_ACCOUNTS": ",".join(u.name for u in users),
        "ORCA_HEALTH_ADDR": "",
    }
    if route == "api":
        env.update({"TRADOVATE_APP_ID": "orca-sim", "TRADOVATE_CID": "7", "TRADOVATE_SEC": sec})
    else:
        env["TRADOVATE_LOGIN"] = route
    if budget_window_s != BUDGET_WINDOW_S:
        env["ORCA_BUDGET_WINDOW"] = str(max(1, round(budget_window_s)))
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    env.update({password_variable(u.name): u.password for u in users})
    env.update(extra)
    return env


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll until predicate() is truthy and return it; TimeoutError naming `what` at the
    deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_EVERY_S)


def seconds_until(predicate: Callable[[], object], timeout: float) -> float | None:
    """How long until predicate() held, or None at the deadline: for measuring, not asserting."""
    started = time.monotonic()
    try:
        wait_for(predicate, timeout=timeout)
    except TimeoutError:
        return None
    return time.monotonic() - started
