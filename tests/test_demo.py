from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, require_redis_server

pytestmark = pytest.mark.e2e  # it runs real tools or processes


@pytest.mark.parametrize("route", ["api", "tradingview"])
def test_demo_shows_all_four_logins_and_stops(tmp_path: Path, route: str) -> None:
    """`TRADOVATE_LOGIN=tradingview make demo` runs the same demo on the TradingView route."""
    require_redis_server()
    env = {"TRADOVATE_LOGIN": route, "ORCA_LOG_FORMAT": "json"}
    demo = DaemonProcess(env, "demo", "--duration", "4", cwd=str(tmp_path))
    try:
        assert demo.wait(timeout=30) == 0
    finally:
        demo.stop()
    out = "\n".join(demo.stdout)
    assert "token keys: 17 valid of 17" in out
    for login in ("APEX_266668", "APEX_272045", "APEX_136189", "APEX_265995"):
        assert f"token:{login} " in out
    assert "token:PAAPEX2666680000001" in out
    assert re.search(r"prices: MNQ last [\d.]+ bid [\d.]+ ask [\d.]+; ES last [\d.]+", out)
    books = re.findall(r"bid ([\d.]+) ask ([\d.]+)", out)
    assert books
    assert all(float(bid) < float(ask) for bid, ask in books)  # never a crossed book
    assert (
        "sessions opened per login: APEX_136189=1, APEX_265995=1, APEX_266668=1, APEX_272045=1"
        in out
    )
    assert "eyJ" not in out
    assert "demo-APEX" not in out
    started = next(e for e in demo.events() if e.get("event") == "daemon.starting")
    assert started["logins"] == ["APEX_266668", "APEX_272045", "APEX_136189", "APEX_265995"]
    assert started["login_routes"] == [route]
    refused = [e for e in demo.events() if e.get("event") == "token.refresh_failed"]
    assert refused == []


def test_ctrl_c_to_the_whole_process_group_stops_the_demo_cleanly(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals every process in the foreground group, Redis included."""
    import os
    import signal
    import subprocess
    import sys
    import time

    require_redis_server()
    demo = subprocess.Popen(
        [sys.executable, "-m", "daemon", "demo"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # a group of its own, as a terminal's foreground job
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            if "token keys: 17 valid of 17" in line:
                break
        interrupted_at = time.monotonic()
        os.killpg(demo.pid, signal.SIGINT)
        out, _ = demo.communicate(timeout=20)
        stopped_in = time.monotonic() - interrupted_at
    finally:
        if demo.poll() is None:
            demo.kill()
    lines.append(out)
    text = "".join(lines)
    assert demo.returncode == 0
    assert stopped_in < 2.0
    assert "Redis not readable" not in text
    assert text.count("token keys: 17 valid of 17") >= 2  # the last table, after the stop
