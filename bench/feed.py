"""Row 10: the price feed at 1,000 quotes a second on loopback. One quote's time from its frame
leaving the simulated socket to its PUBLISH reaching a subscriber (through the daemon, the
websocket, the merge and Redis), beside a raw SET+PUBLISH of the same JSON sent from this
process at the same rate and timed the same way; and the feeding daemon's CPU."""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from bench.idle import cpu_s, processes
from daemon.sim.environment import daemon_environment
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate, numbered_desk

QUOTES_PER_S = 1_000
WINDOW_S = 10.0
ROUNDS = 3  # this machine is noisy: each figure is the median of its rounds
RAW_SYMBOL = "RAW"  # the baseline's own channel and key
Report = Callable[..., None]


def _listen(
    server: RedisServer, symbol: str, seen: list[tuple[float, float]], stop: threading.Event
) -> None:
    """(arrival perf_counter, Last) of every message on price:{symbol}."""
    pubsub = server.client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(f"price:{symbol}")
    while not stop.is_set():
        message = pubsub.get_message(timeout=0.1)
        if message:
            seen.append((time.perf_counter(), float(json.loads(message["data"])["Last"])))
    pubsub.close()


def _latencies_ms(sent: dict[float, float], seen: list[tuple[float, float]]) -> list[float]:
    return [(arrived - sent[last]) * 1000 for arrived, last in seen if last in sent]


def _raw(server: RedisServer) -> tuple[list[float], float]:
    """The same JSON SET+PUBLISHed at the same rate from here: latencies (ms), CPU of a core
    of the sending thread."""
    client, sent, stop = server.client(), dict[float, float](), threading.Event()
    seen: list[tuple[float, float]] = []
    listener = threading.Thread(target=_listen, args=(server, RAW_SYMBOL, seen, stop))
    listener.start()
    time.sleep(0.3)
    started, cpu = time.perf_counter(), time.thread_time()
    for n in range(int(QUOTES_PER_S * WINDOW_S / 4)):
        payload = json.dumps(
            {"Last": 21_000 + n * 0.25, "Bid": 1, "Ask": 2, "Volume": n, "High": 3, "Low": 0,
             "Timestamp": int(time.time() * 1000)}
        )  # fmt: skip
        pipe = client.pipeline(transaction=False)
        pipe.set(f"price:{RAW_SYMBOL}:latest", payload, ex=5)
        pipe.publish(f"price:{RAW_SYMBOL}", payload)
        sent[21_000 + n * 0.25] = time.perf_counter()
        pipe.execute()
        time.sleep(max(0.0, started + (n + 1) / QUOTES_PER_S - time.perf_counter()))
    cpu_share = (time.thread_time() - cpu) / (time.perf_counter() - started)
    time.sleep(0.3)
    stop.set()
    listener.join()
    return _latencies_ms(sent, seen), cpu_share


def bench_feed(report: Report, workdir: Path) -> None:
    with RedisServer(workdir=workdir) as server:
        raw_windows = [_raw(server) for _ in range(ROUNDS)]
        server.client().flushall()
        with FakeTradovate(numbered_desk(1, 1)) as fake:
            fake.market.partial = False  # each quote has its Trade: its Last names it
            fake.market.quotes_per_s = QUOTES_PER_S
            fake.market.record_sends = True
            symbol = fake.market.front_month("MNQ")
            env = daemon_environment(
                fake.base_url,
                fake.users.values(),
                server.url,
                sec=fake.sec,
                ORCA_PRICE_SYMBOLS=symbol,
                TRADOVATE_MD_URL=fake.market.url,
                ORCA_LOG_LEVEL="warning",
                ORCA_HEALTH_ADDR="",
            )
            seen: list[tuple[float, float]] = []
            stop = threading.Event()
            listener = threading.Thread(target=_listen, args=(server, symbol, seen, stop))
            listener.start()
            windows: list[tuple[list[tuple[float, float]], float]] = []
            with processes([([sys.executable, "-m", "daemon", "run"], env)]) as (daemon,):
                deadline = time.monotonic() + 30
                while len(seen) < QUOTES_PER_S and time.monotonic() < deadline:
                    time.sleep(0.1)  # connected and writing: the windows start
                for _ in range(ROUNDS):
                    mark, before, started = len(seen), cpu_s(daemon.pid), time.perf_counter()
                    time.sleep(WINDOW_S)  # the measurement window itself
                    cpu = (cpu_s(daemon.pid) - before) / (time.perf_counter() - started)
                    windows.append((seen[mark:], cpu))
                stop.set()
                listener.join()
            sent = dict(fake.market.sent)
    feeds = [_Round.of(_latencies_ms(sent, arrived), cpu) for arrived, cpu in windows]
    raws = [_Round.of(ms, cpu) for ms, cpu in raw_windows]
    feed, raw = _Round.median(feeds), _Round.median(raws)
    report(
        f"10. price feed at {QUOTES_PER_S:,} quotes/s, one symbol, {ROUNDS} x {WINDOW_S:.0f} s",
        f"frame to subscriber: median {feed.median_ms:.2f} ms, p99 {feed.p99_ms:.2f} ms; the "
        f"feeding daemon's CPU {feed.cpu:.1%} of a core (each the median of {ROUNDS} rounds: "
        f"{_Round.each(feeds)})",
        f"raw SET+PUBLISH of the same JSON from here: median {raw.median_ms:.2f} ms, p99 "
        f"{raw.p99_ms:.2f} ms, its thread's CPU {raw.cpu:.1%} ({_Round.each(raws)})",
        "p99 < 2 ms; CPU < 10% of a core",
        feed.p99_ms < 2.0 and feed.cpu < 0.10,
    )


@dataclass(frozen=True)
class _Round:
    median_ms: float
    p99_ms: float
    cpu: float

    @classmethod
    def of(cls, latencies_ms: list[float], cpu: float) -> _Round:
        p99 = statistics.quantiles(latencies_ms, n=100)[98]
        return cls(statistics.median(latencies_ms), p99, cpu)

    @classmethod
    def median(cls, rounds: list[_Round]) -> _Round:
        """Each figure the median of the rounds' own."""
        return cls(*(statistics.median(getattr(r, f.name) for r in rounds) for f in fields(cls)))

    @staticmethod
    def each(rounds: list[_Round]) -> str:
        p99s = "/".join(f"{r.p99_ms:.2f}" for r in rounds)
        return f"p99 {p99s} ms, CPU " + "/".join(f"{r.cpu:.1%}" for r in rounds)
