"""One renewal's way through the code, traced: from the scheduler's job to the fenced Redis write
it visits each module once, in the order decide, act, settle, write (docs/architecture.md, "One
renewal")."""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import daemon
from daemon.sim.tradovate import FakeTradovate
from daemon.store.lease import Fence, Holding, lease_key
from daemon.tradovate import TokenGrant
from tests.helpers import FakeClock, refreshing_for, settings_for, tradovate_routes, user

PACKAGE = Path(daemon.__file__).parent
# Modules directly in the package are the floor every layer uses (constants, logs, timescale,
# token_format, values, outcomes: tests/test_layout.py's layer 0). They hold no state and call
# nothing back, so a route may use them anywhere; every module in a folder counts.
ROUTE = [
    "refresh/refresher",  # the job, then decide
    "refresh/policy",
    "store/budget",  # act: a renewal slot
    "tradovate/client",  # act: the one Tradovate call
    "refresh/settle",
    "refresh/schedule",  # the group replans once
    "refresh/keeper",
    "store/tokens",
    "store/status",
    "store/fence",  # the fenced write
]


def _module(frame: FrameType | None) -> str | None:
    """The package module `frame` runs in (the simulator is not the package's code)."""
    if frame is None:
        return None
    try:
        relative = Path(frame.f_code.co_filename).relative_to(PACKAGE)
    except ValueError:
        return None
    return None if relative.parts[0] == "sim" else str(relative.with_suffix(""))


def _caller(frame: FrameType) -> str | None:
    """The package module that called into `frame`, through any library frames between."""
    caller = frame.f_back
    while caller is not None and _module(caller) is None:
        caller = caller.f_back
    return _module(caller)


def trace_until_write(call: Any) -> list[str]:
    """Every call from one package module into another made by `call()` until the fenced write
    reaches redis-py, as "caller -> callee"; the floor's calls left out."""
    steps: list[str] = []
    written = False

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal written
        if event != "call" or written:
            return
        callee = _module(frame)
        if callee is None:
            in_redis = "/redis/" in frame.f_code.co_filename
            if in_redis and frame.f_code.co_name == "eval" and _caller(frame) == "store/fence":
                written = True
            return
        caller = _caller(frame)
        if caller != callee and "/" in callee:
            steps.append(f"{caller} -> {callee}")

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    assert written, "the renewal never reached the fenced write"
    return steps


@pytest.fixture
def renewal_due() -> Iterator[tuple[Any, FakeClock]]:
    """APEX_1 holding a token whose renewal is due, its lease held (writes are fenced, as in
    the daemon); returns the scheduler's job and the clock."""
    clock = FakeClock()
    fake = FakeTradovate([user("APEX_1"), user("APEX_2")], token_lifetime_s=4_800, clock=clock)
    with tradovate_routes(fake):
        settings = settings_for(fake, ORCA_TOKEN_PROBE_INTERVAL="3600")
        fences = {login: Fence(lease_key(login), f"me:{login}") for login in ("APEX_1", "APEX_2")}
        holdings = {login: Holding(fence, math.inf) for login, fence in fences.items()}
        refreshing = refreshing_for(settings, clock, rng=random.Random(1), holdings=holdings)
        for fence in fences.values():
            refreshing.keeper.redis.set(fence.key, fence.value)
        refresher = refreshing.refresher
        clock.advance(refresher.job("APEX_1"))  # logged in, accounts listed; renewal due
        yield refresher.job, clock
        state = refresher.states["APEX_1"]
        assert isinstance(state.grant, TokenGrant)
        assert state.grant.source == "renew"


def test_one_renewal_visits_each_module_once_on_its_way_to_the_write(
    renewal_due: tuple[Any, FakeClock],
) -> None:
    job, _ = renewal_due
    steps = trace_until_write(lambda: job("APEX_1"))
    entered = [step.split(" -> ")[1] for step in steps]
    assert sorted(set(entered)) == sorted(ROUTE)
    assert len(set(entered)) <= 10
    again = sorted({module for module in entered if entered.count(module) > 1})
    assert again == [], f"entered a second time: {again} in {steps}"
    assert entered.index("refresh/policy") < entered.index("tradovate/client")
    assert entered.index("tradovate/client") < entered.index("refresh/settle")
    assert entered.index("refresh/settle") < entered.index("refresh/keeper")
