"""The desk's TypeScript programs read the same keys: the npm `redis` client gets the values this
project wrote, token for token and price for price, pushed updates included."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from daemon import price
from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from tests.helpers import QUOTE, seed

TS_DIR = Path(__file__).parent / "ts"


@pytest.fixture(scope="module")
def consumer() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed for the TypeScript consumer test"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}: it must not be skipped under CI=true")
        pytest.skip(message)
    if not (TS_DIR / "node_modules" / "redis").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS_DIR, check=True)
    subprocess.run([npm, "run", "--silent", "build"], cwd=TS_DIR, check=True)
    return TS_DIR / "dist" / "consumer.js"


@pytest.mark.timeout(120)
def test_typescript_reads_what_python_wrote(consumer: Path, redis_server: RedisServer) -> None:
    written = seed(redis_server)
    client = redis_server.client()
    quote = {**QUOTE, "Timestamp": 1}
    price.store("MNQZ5", quote, client=client)
    reader = subprocess.Popen(
        ["node", str(consumer), redis_server.url, "MNQZ5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: client.exists("ts-consumer:subscribed"),
            timeout=30,
            what="the TypeScript subscriber",
        )
        pushed = {**quote, "Last": 21001.0, "Timestamp": int(time.time() * 1000)}
        price.store("MNQZ5", pushed, client=client)
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert seen["tokens"] == {
        f"token:{name}": written["APEX_1"] for name in ("APEX_1", "PA1", "PA2")
    }
    assert seen["latest"] == quote
    assert seen["pushed"] == pushed
