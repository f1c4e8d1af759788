"""Shared test helpers: a clock to move by hand, JWTs, polling with a deadline, and respx
routes answered by the same simulated Tradovate the end-to-end tests serve over HTTP."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest
import respx

from daemon import cache, price
from daemon.config import Settings, load_settings
from daemon.logs import fingerprint
from daemon.metrics import Metrics
from daemon.outcomes import Outcome
from daemon.refresh.adoption import Adoption
from daemon.refresh.build import Refreshing, build_refreshing
from daemon.refresh.refresher import Refresher
from daemon.sim.environment import daemon_environment, wait_for
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate, FakeUser, Hang, Reset
from daemon.store.status import LoginStatus
from daemon.store.tokens import TokenSet, write_login_tokens
from daemon.token_format import iso
from daemon.tradovate import TradovateClient

QUOTE = {
    "Last": 21000.25,
    "Bid": 21000.0,
    "Ask": 21000.5,
    "Volume": 12345,
    "High": 21100.0,
    "Low": 20950.0,
}


class FakeClock:
    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_jwt(exp: float, **claims: Any) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'exp': int(exp), **claims})}.c2ln"


def metric_value(metrics_text: str, sample: str) -> float:
    """The value of one sample (`name{labels}` as Prometheus prints it), 0 when absent."""
    for line in metrics_text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def user(name: str, accounts: int = 2) -> FakeUser:
    return FakeUser(name, f"pw-{name}-Zq9", [f"{name}-ACC{n}" for n in range(1, accounts + 1)])


def daemon_env(fake: FakeTradovate, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment a daemon needs for the simulator's users."""
    return daemon_environment(
        fake.base_url,
        fake.users.values(),
        redis_url,
        sec=fake.sec,
        budget_window_s=fake.budget_window_s,
        **extra,
    )


def settings_for(fake: FakeTradovate, **extra: str) -> Settings:
    return load_settings(daemon_env(fake, **extra))


def refresher_for(settings: Settings, clock: FakeClock, **options: Any) -> Refresher:
    """A refresher on fakeredis whose Tradovate client and policy share one injected clock."""
    return refreshing_for(settings, clock, **options).refresher


def refreshing_for(settings: Settings, clock: FakeClock, **options: Any) -> Refreshing:
    """`refresher_for`, with the keeper and the capacity beside it."""
    return build_refreshing(
        settings,
        TradovateClient(settings.tradovate, clock=clock),
        fakeredis.FakeRedis(decode_responses=True),
        metrics=Metrics(),
        instance="test",
        clock=clock,
        **options,
    )


@contextmanager
def tradovate_routes(fake: FakeTradovate) -> Iterator[respx.MockRouter]:
    """Answer every request to the simulator's base URL through respx, without a socket."""

    def respond(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            body: Any = dict(urllib.parse.parse_qsl(request.content.decode()))
        else:
            body = json.loads(request.content) if request.content else None
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        status, answer = fake.answer(request.method, request.url.path, body, token)
        if isinstance(answer, Hang):
            raise httpx.ReadTimeout("timed out", request=request)
        if isinstance(answer, Reset):
            raise httpx.RemoteProtocolError("connection reset", request=request)
        if isinstance(answer, bytes):
            return httpx.Response(status, content=answer, headers={"Content-Type": "text/html"})
        return httpx.Response(status, json=answer)

    with respx.mock(base_url=fake.tv_base_url, assert_all_called=False) as router:
        router.route().mock(side_effect=respond)
        yield router


def secrets_of(env: Mapping[str, str]) -> list[str]:
    """Values that must never appear in a log line."""
    names = [k for k in env if k.startswith("TRADOVATE_PASSWORD_")] + ["TRADOVATE_SEC"]
    return [env[k] for k in names if k in env]


class DaemonProcess:
    """`python -m daemon ...` as a child process, its JSON log lines collected as they come."""

    def __init__(
        self, env: Mapping[str, str], *args: str, cwd: str, exe: str | None = None
    ) -> None:
        import os
        import subprocess
        import sys
        import threading

        full_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        full_env.update({"ORCA_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **env})
        self.process = subprocess.Popen(
            [*([exe] if exe else [sys.executable, "-m", "daemon"]), *(args or ("run",))],
            env=full_env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.stdout: list[str] = []
        assert self.process.stderr is not None
        assert self.process.stdout is not None
        self._readers = [
            threading.Thread(target=self._collect, args=(self.process.stderr, self.lines)),
            threading.Thread(target=self._collect, args=(self.process.stdout, self.stdout)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    @staticmethod
    def _collect(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def event(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((e for e in self.events() if e.get("event") == name), None)

        found: dict[str, Any] = wait_for(find, timeout=timeout, what=f"log event {name}")
        return found

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=5)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


Run = Callable[..., tuple[int, str, str]]


def status_json(run: Run) -> dict[str, Any]:
    """`orca-tokens status --json` through `run`, with its exit code under "code"."""
    code, out, _ = run("status", "--json")
    value: dict[str, Any] = json.loads(out)
    value["code"] = code
    return value


StartDaemon = Callable[..., DaemonProcess]  # the `start_daemon` fixture


class Spawned(list[DaemonProcess]):
    """The daemon subprocesses a test started (the `processes` fixture kills what still runs)."""

    def start(
        self, env: Mapping[str, str], *args: str, cwd: str, exe: str | None = None
    ) -> DaemonProcess:
        process = DaemonProcess(env, *args, cwd=cwd, exe=exe)
        self.append(process)
        return process


def seed(server: RedisServer, fake: FakeTradovate | None = None) -> dict[str, str]:
    """Tokens for APEX_1 (2 accounts) as the daemon writes them; returns name -> token."""
    client = server.client()
    now = time.time()
    token = make_jwt(now + 5_400, sub="APEX_1")
    write_login_tokens(
        client,
        TokenSet("APEX_1", token, now + 5_400, 5_400, make_jwt(now + 5_400), ("PA1", "PA2")),
        now=now,
        max_ttl_s=18_000,
        status=LoginStatus(
            "APEX_1",
            fingerprint=fingerprint(token),
            expires_at=iso(now + 5_400),
            issued_at=iso(now),
            accounts=("PA1", "PA2"),
            source=Outcome.LOGIN,
        ),
    )
    cache.set("accounts", "PA1", value={"n": 1}, client=client)
    price.store("MNQZ5", {"Last": 21000.25, "Bid": 21000.0, "Ask": 21000.5}, client=client)
    return {"APEX_1": token}


REDIS_PASSWORD = "redis-Pa55-word"


def require_redis_server() -> None:
    if shutil.which("redis-server"):
        return
    message = "redis-server is not installed (make test installs it with apt-get)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}: integration tests must not be skipped under CI=true")
    pytest.skip(message)


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{name} is needed to check the deployment files under CI=true")
        pytest.skip(f"{name} is not installed")
    return path


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback http)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@dataclass
class World:
    clock: FakeClock
    fake: FakeTradovate
    redis: fakeredis.FakeRedis
    metrics: Metrics
    refresher: Refresher
    adoption: Adoption

    def token(self, name: str) -> str | None:
        value = self.redis.get(f"token:{name}")
        return value if isinstance(value, str) else None

    def count(self, login: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "orca_token_refresh_total", {"login": login, "outcome": outcome}
        )
        return value or 0.0


def build_world(fake: FakeTradovate, clock: FakeClock, **env: str) -> World:
    # Probing hourly keeps these tests about renewal timing; probing has tests of its own.
    settings = settings_for(fake, **{"ORCA_TOKEN_PROBE_INTERVAL": "3600", **env})
    metrics = Metrics()
    client = TradovateClient(settings.tradovate, metrics=metrics, clock=clock)
    store = fakeredis.FakeRedis(decode_responses=True)
    refreshing = build_refreshing(
        settings, client, store, metrics=metrics, instance="test", clock=clock, rng=random.Random(1)
    )
    return World(clock, fake, store, metrics, refreshing.refresher, refreshing.adoption)


@contextmanager
def two_login_world(lifetime_s: float = 4_800.0) -> Iterator[World]:
    """APEX_1 (2 accounts) and APEX_2 (3) at a simulator on a hand-moved clock, answered
    through respx: the `world` fixture of the refresher's tests."""
    clock = FakeClock()
    fake = FakeTradovate(
        [user("APEX_1", accounts=2), user("APEX_2", accounts=3)],
        token_lifetime_s=lifetime_s,
        clock=clock,
    )
    with tradovate_routes(fake):
        yield build_world(fake, clock)


def doc_block(page: str, after: str) -> list[str]:
    """The lines of the first ```sh block after the text `after` in `page` (README.md or a page
    under docs/), comments left out: what a recipe tells a person to type."""
    text = (Path(__file__).parent.parent / page).read_text(encoding="utf-8")
    start = text.index("```sh\n", text.index(after)) + len("```sh\n")
    block = text[start : text.index("```", start)]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
