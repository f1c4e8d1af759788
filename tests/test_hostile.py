"""Hostile and broken inputs, served by a local stand-in over HTTP or put into a real Redis:
nothing from outside corrupts another login's key, stalls a pass or leaks a secret."""

from __future__ import annotations

import json
import time
from pathlib import Path

from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate, FakeUser
from tests.helpers import DaemonProcess, daemon_env


def test_names_are_owned_across_logins(
    redis_server: RedisServer, tmp_path: Path, processes: list[DaemonProcess]
) -> None:
    """ALICE's account list names BOB (another configured login), an account BOB lists too,
    and names no key may have: BOB's key only ever holds BOB's token, the shared account is
    ALICE's (first in configuration order), and the bad names are never written."""
    alice = FakeUser(
        "ALICE", "pw-alice-Zq9", ["BOB", "SHARED", "ALICE-1", "bad name*", "x" * 5_000, "a:b"]
    )
    bob = FakeUser("BOB", "pw-bob-Zq9", ["SHARED", "BOB-1"])
    with FakeTradovate([alice, bob]) as fake:
        daemon = DaemonProcess(daemon_env(fake, redis_server.url), cwd=str(tmp_path))
        processes.append(daemon)
        client = redis_server.client()
        wait_for(lambda: client.get("token:BOB-1") and client.get("token:ALICE-1"))
        deadline = time.monotonic() + 6  # more than one reconcile pass (5 s)
        owners = set()
        while time.monotonic() < deadline:
            owners.add(fake.user_of(str(client.get("token:BOB") or "")))
            assert fake.user_of(str(client.get("token:SHARED") or "")) == "ALICE"
            time.sleep(0.05)
        assert owners == {"BOB"}
        assert sorted(client.keys("token:*")) == sorted(
            ["token:ALICE", "token:ALICE-1", "token:SHARED", "token:BOB", "token:BOB-1"]
        )
        events = daemon.events()
        refused = [e for e in events if e["event"] == "account.name_refused"]
        assert len(refused) == 3  # once each, not once per write
        skipped = [e for e in events if e["event"] == "account.owned_by_another"]
        assert {(e["login"], e["account"], e["owner"]) for e in skipped} == {
            ("ALICE", "BOB", "BOB"),
            ("BOB", "SHARED", "ALICE"),
        }
        assert not any(e["event"] == "token.restored" for e in events)  # nothing flips
        bob_status = json.loads(client.get("orca:status:BOB") or "{}")
        assert bob_status["accounts"] == ["BOB-1"]
        assert "SHARED is written by ALICE" in bob_status["notes"]
