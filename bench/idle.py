"""Rows 8 and 9: what idling costs as the desk grows. One daemon holding 100, 1,000 and 5,000
logins, and a fleet of instances on as many /24s sharing one Redis, each figure beside the same
interpreter idle. Only what changes should cost anything: a desk at rest renews a token now and
then and writes a heartbeat a second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon.sim.environment import daemon_environment
from daemon.sim.proxy import TcpProxy
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import numbered_desk
from daemon.store.client import count_existing

IDLE_S = 30.0
SETTLED_S = 5.0  # after every key is written, before the window: the first renewals settle
Report = Callable[..., None]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def simulator(logins: int, accounts: int = 1, latency_s: float = 0.0) -> Iterator[str]:
    """Tradovate simulated in a process of its own, so it never competes with the daemon for the
    GIL, budgets lifted: what a benchmark measures is the daemon."""
    options = ["--logins", str(logins), "--accounts", str(accounts), "--latency", str(latency_s)]
    options.append("--no-budgets")
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon.sim.tradovate", *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        yield process.stdout.readline().strip()
    finally:
        process.kill()
        process.wait()


def _env(url: str, logins: int, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    lifted = {
        "ORCA_AUTH_RATE_LIMIT": "1000000",
        "ORCA_RENEW_BUDGET_PER_HOUR": "10000",
        "ORCA_LOGIN_FAILURE_BUDGET_PER_HOUR": "10000",
        "ORCA_LOG_LEVEL": "warning",
        "ORCA_HEALTH_ADDR": "",
    }
    env.update(daemon_environment(url, numbered_desk(logins, 1), redis_url))
    return {**env, **lifted, **extra}


@contextmanager
def processes(
    argvs: list[tuple[list[str], dict[str, str]]],
) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [
        subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for argv, env in argvs
    ]
    try:
        yield started
    finally:
        stop_all(started, timeout_s=20)


def stop_all(started: list[subprocess.Popen[bytes]], *, timeout_s: float) -> None:
    """SIGTERM to every one still running, then each is waited for (killed after timeout_s)."""
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_keys(server: RedisServer, logins: int, timeout_s: float) -> float:
    """Seconds until every token and md token key of the numbered desk is written."""
    client, started = server.client(), time.perf_counter()
    names = [name for n in range(logins) for name in (f"LOGIN_{n:04d}", f"PA{n:04d}00")]
    keys = [f"{kind}:{name}" for name in names for kind in ("token", "mdtoken")]
    while count_existing(client, keys) < len(keys):
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"not every key after {timeout_s} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def _window(
    server: RedisServer, pids: list[int], baseline: int, proxy: TcpProxy | None = None
) -> dict[str, float]:
    """CPU (of a core) of the pids together, the baseline and redis-server, Redis commands (a
    script's own commands included) and, through `proxy`, the clients' round trips, over
    IDLE_S."""
    client = server.client()
    assert server.process is not None
    before = [cpu_s(pid) for pid in pids], cpu_s(baseline), cpu_s(server.process.pid)
    commands = int(client.info("stats")["total_commands_processed"])
    trips = proxy.round_trips if proxy else 0
    time.sleep(IDLE_S)  # the measurement window itself
    after = [cpu_s(pid) for pid in pids], cpu_s(baseline), cpu_s(server.process.pid)
    commands = int(client.info("stats")["total_commands_processed"]) - commands - 1
    trips = (proxy.round_trips if proxy else 0) - trips
    return {
        "cpu": (sum(after[0]) - sum(before[0])) / IDLE_S,
        "base": (after[1] - before[1]) / IDLE_S,
        "redis": (after[2] - before[2]) / IDLE_S,
        "commands_per_s": commands / IDLE_S,
        "round_trips_per_s": trips / IDLE_S,
    }


def _baseline() -> list[str]:
    return [sys.executable, "-c", "import daemon.service.daemon, time; time.sleep(3600)"]


def bench_idle_curve(report: Report, workdir: Path) -> None:
    """Row 8: one idle daemon at 100, 1,000 and 5,000 logins."""
    for logins in (100, 1_000, 5_000):
        with (
            RedisServer(workdir=workdir) as server,
            TcpProxy(server.port) as proxy,  # counts the daemon's round trips
            simulator(logins) as url,
        ):
            redis_url = f"redis://127.0.0.1:{proxy.port}/0"
            argvs = [([sys.executable, "-m", "daemon", "run"], _env(url, logins, redis_url))]
            with processes([*argvs, (_baseline(), dict(os.environ))]) as (daemon, baseline):
                started = time.perf_counter()
                first = _first_token(server)
                _wait_keys(server, logins, 120)
                every = time.perf_counter() - started
                time.sleep(SETTLED_S)
                figures = _window(server, [daemon.pid], baseline.pid, proxy)
                rss, base_rss = rss_mib(daemon.pid), rss_mib(baseline.pid)
        goal_cpu = {100: None, 1_000: 0.01, 5_000: None}[logins]
        ok = (goal_cpu is None or figures["cpu"] < goal_cpu) and (
            logins != 1_000 or figures["redis"] < 0.01
        )
        ok = ok and (logins != 5_000 or rss < 150 / 1.048576)
        report(
            f"8. idle daemon holding {logins:,} logins for {IDLE_S:.0f} s",
            f"CPU {figures['cpu']:.2%}, RSS {rss:.0f} MiB, "
            f"{figures['round_trips_per_s'] * 60:,.0f} Redis round trips a minute "
            f"({figures['commands_per_s'] * 60:,.0f} commands, a script's own counted), "
            f"redis-server CPU {figures['redis']:.2%}; cold start: "
            f"first token {first:.2f} s, every key {every:.1f} s",
            f"the same interpreter idle: CPU {figures['base']:.2%}, RSS {base_rss:.0f} MiB",
            {
                100: "a figure for the curve",
                1_000: "< 1% CPU, redis-server < 1%; every key < 15 s",
                5_000: "RSS < 150 MB",
            }[logins],
            ok and (logins != 1_000 or every < 15),
        )


def _first_token(server: RedisServer) -> float:
    client, started = server.client(), time.perf_counter()
    while next(client.scan_iter("token:*", count=1000), None) is None:
        time.sleep(0.005)
    return time.perf_counter() - started


def bench_idle_fleet(report: Report, workdir: Path) -> None:
    """Row 9: 10 instances on 10 /24s sharing 200 logins, and 20 sharing 400, idle."""
    rates: list[float] = []
    for instances, logins in ((10, 200), (20, 400)):
        with RedisServer(workdir=workdir) as server, simulator(logins) as url:
            argvs = [
                (
                    [sys.executable, "-m", "daemon", "run"],
                    _env(
                        url,
                        logins,
                        server.url,
                        TRADOVATE_LOCAL_ADDRESS=f"127.0.{n + 1}.1",
                        ORCA_BUDGET_GROUP=f"address-{n + 1}",
                    ),
                )
                for n in range(instances)
            ]
            with processes([*argvs, (_baseline(), dict(os.environ))]) as started:
                *fleet, baseline = started
                _wait_keys(server, logins, 180)
                _wait_shared(server, logins, instances, 120)
                time.sleep(SETTLED_S)
                figures = _window(server, [p.pid for p in fleet], baseline.pid)
        rates.append(figures["commands_per_s"])
        last = instances == 20
        grows = rates[-1] / rates[0] if last else 1.0
        report(
            f"9. idle fleet: {instances} instances on {instances} /24s sharing {logins} logins",
            f"fleet CPU {figures['cpu']:.2%} of a core, {figures['commands_per_s']:,.0f} Redis "
            f"commands/s, redis-server CPU {figures['redis']:.2%}"
            + (f"; doubling both: commands x{grows:.2f}" if last else ""),
            f"one interpreter idle: CPU {figures['base']:.2%}",
            "redis-server < 2% at 20; doubling both at most doubles the commands" if last else "",
            (figures["redis"] < 0.02 and grows <= 2.0) if last else None,
        )


def _wait_shared(server: RedisServer, logins: int, instances: int, timeout_s: float) -> None:
    """Until every login's lease is held and `instances` distinct holders hold them."""
    client, started = server.client(), time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        values = client.mget([f"orca:lease:LOGIN_{n:04d}" for n in range(logins)])
        holders = {":".join(str(v).split(":")[:3]) for v in values if v}
        if None not in values and len(holders) >= instances:
            return
        time.sleep(0.5)
    raise TimeoutError("the fleet did not settle")
