from __future__ import annotations

from pathlib import Path

from tests.conftest import _require_redis_server
from tests.helpers import DaemonProcess


def test_demo_shows_all_four_logins_and_stops(tmp_path: Path) -> None:
    _require_redis_server()
    demo = DaemonProcess({}, "demo", "--duration", "4", cwd=str(tmp_path))
    try:
        assert demo.wait(timeout=30) == 0
    finally:
        demo.stop()
    out = "\n".join(demo.stdout)
    assert "token keys: 17 valid of 17" in out
    for login in ("APEX_266668", "APEX_272045", "APEX_136189", "APEX_265995"):
        assert f"token:{login} " in out
    assert "token:PAAPEX2666680000001" in out
    assert (
        "sessions opened per login: APEX_136189=1, APEX_265995=1, APEX_266668=1, APEX_272045=1"
        in out
    )
    assert "eyJ" not in out
    assert "demo-APEX" not in out
