"""Issue 33's run, in `make soak`: 4 symbols at 200 quotes a second for 5 minutes against the
simulator, the md token renewed under the feed at least 3 times, the socket closed twice from the
server's side, and the producing instance SIGKILLed once with a second instance running. Every
0.25 s sample of the 4 keys holds the reference's shape with a Timestamp at most 2 s old, but in
the takeover (at most 30 s); a subscriber gets the PUBLISHed updates in order; the simulator never
sees two sockets; `status` shows the feed."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate
from daemon.sim.tradovate.market import catalogue
from tests.helpers import DaemonProcess, Run, Spawned, daemon_env, status_json, user

# The front month of 4 roots as explicit contracts: listed by the simulator whatever the date.
SYMBOLS = tuple(
    next(n for n in catalogue(time.time()) if n[:-2] == r) for r in ("MNQ", "ES", "NQ", "MES")
)
FIELDS = {"Last", "Bid", "Ask", "Volume", "High", "Low", "Timestamp"}
RUN_S = 300.0
TOKEN_S = 80.0  # renewed about every 65 s: 4 renewals in the run


class Samples:
    """Every 0.25 s: each symbol's key, judged (shape, Timestamp at most 2 s old)."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()
        self.bad: list[tuple[float, str, str]] = []  # (when, symbol, why)
        self.taken = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Samples:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            now = time.time()
            values = self.client.mget([f"price:{s}:latest" for s in SYMBOLS])
            self.taken += 1
            for symbol, value in zip(SYMBOLS, values, strict=True):
                why = _judge(value, now)
                if why:
                    self.bad.append((time.monotonic(), symbol, why))


def _judge(value: Any, now: float) -> str | None:
    if value is None:
        return "missing"
    price = json.loads(value)
    if set(price) != FIELDS or not all(isinstance(price[f], int | float) for f in FIELDS):
        return f"shape {sorted(price)}"
    age_s = now - price["Timestamp"] / 1000
    return f"{age_s:.1f} s old" if age_s > 2.0 else None


def _in_order(server: RedisServer, seen: list[list[int]], stop: threading.Event) -> None:
    """Each symbol's published Timestamps, as a subscriber receives them."""
    pubsub = server.client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(*(f"price:{s}" for s in SYMBOLS))
    while not stop.is_set():
        message = pubsub.get_message(timeout=0.2)
        if message:
            index = SYMBOLS.index(str(message["channel"]).removeprefix("price:"))
            seen[index].append(json.loads(message["data"])["Timestamp"])
    pubsub.close()


@pytest.mark.soak
@pytest.mark.timeout(480)
def test_four_symbols_for_five_minutes_through_renewals_closes_and_a_killed_producer(
    redis_server: RedisServer,
    processes: Spawned,
    tmp_path: Path,
    cli: Callable[[dict[str, str]], Run],
) -> None:
    with FakeTradovate([user("APEX_1", accounts=1)], token_lifetime_s=TOKEN_S) as fake:
        fake.market.quotes_per_s = 200
        env = daemon_env(
            fake,
            redis_server.url,
            ORCA_PRICE_SYMBOLS=",".join(SYMBOLS),
            TRADOVATE_MD_URL=fake.market.url,
        )
        instances = [processes.start(env, cwd=str(tmp_path)) for _ in range(2)]
        wait_for(lambda: _all_written(redis_server), timeout=30, what="4 prices")
        seen: list[list[int]] = [[] for _ in SYMBOLS]
        stop = threading.Event()
        subscriber = threading.Thread(target=_in_order, args=(redis_server, seen, stop))
        subscriber.start()
        samples = Samples(redis_server).start()
        started = time.monotonic()
        takeover: tuple[float, float] = (0.0, 0.0)
        for at_s, act in ((60, "close"), (120, "kill"), (200, "close")):
            time.sleep(max(0.0, started + at_s - time.monotonic()))
            if act == "close":
                assert fake.market.close_all("maintenance") == 1
                continue
            producer = _producer(instances, redis_server)
            killed_at = time.monotonic()
            producer.signal(signal.SIGKILL)
            producer.wait()
            _wait_for_another_socket(fake, fake.market.connections)
            wait_for(lambda: _all_written(redis_server), timeout=10, what="prices again")
            takeover = (killed_at, time.monotonic() + 2.0)
        time.sleep(max(0.0, started + RUN_S - time.monotonic()))
        samples.stop()
        stop.set()
        subscriber.join()
        status = status_json(cli(env))
    outside = [bad for bad in samples.bad if not takeover[0] <= bad[0] <= takeover[1]]
    assert samples.taken > RUN_S * 3
    assert outside == []
    assert takeover[1] - takeover[0] <= 32
    assert all(len(stamps) > 1_000 and stamps == sorted(stamps) for stamps in seen)
    assert fake.market.most_open == 1, (
        fake.market.opened_beside,
        _feed_events(instances),
    )
    assert len(set(fake.market.authorized_tokens)) >= 4  # the first and 3 renewed md tokens
    assert fake.market.refused_tokens == 0
    assert status["feed"]["connected"] is True
    assert set(status["feed"]["symbols"]) == set(SYMBOLS)


def _feed_events(instances: list[DaemonProcess]) -> list[str]:
    return [
        f"{d.process.pid} {e.get('timestamp')} {e['event']} {e.get('reason', '')}"
        for d in instances
        for e in d.events()
        if str(e.get("event", "")).startswith("feed.")
    ]


def _wait_for_another_socket(fake: FakeTradovate, opened: int) -> None:
    wait_for(lambda: fake.market.connections > opened, timeout=30, what="the takeover")


def _all_written(server: RedisServer) -> bool:
    return all(server.client().mget([f"price:{s}:latest" for s in SYMBOLS]))


def _producer(instances: list[DaemonProcess], server: RedisServer) -> DaemonProcess:
    """The instance holding the feed's lease."""
    holder = str(server.client().get("orca:feed:lease")).rsplit(":", 1)[0]
    pid = int(holder.split(":")[1])
    return next(d for d in instances if d.process.pid == pid)
