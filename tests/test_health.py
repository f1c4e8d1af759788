from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from daemon.metrics import Metrics
from daemon.service.daemon import Daemon
from daemon.service.health import HealthServer
from daemon.service.jobs import JobRunner
from daemon.service.systemd import Notifier
from daemon.sim.environment import wait_for
from daemon.sim.tradovate import FakeTradovate
from tests.helpers import FakeClock, make_jwt, settings_for, tradovate_routes


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback http)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, Any]]]:
    answers: dict[str, Any] = {"healthy": (True, {"status": "ok"}), "ready": (False, {"x": 1})}
    metrics = Metrics()
    metrics.refresh_total.labels(login="APEX_1", outcome="login").inc()
    metrics.redis_up.set(1)
    health = HealthServer(
        ("127.0.0.1", 0),
        metrics,
        healthy=lambda: answers["healthy"],
        ready=lambda: answers["ready"],
    )
    health.start()
    host, port = health.address
    yield f"http://{host}:{port}", answers
    health.stop()


def test_metrics_page_has_spec_names(server: tuple[str, dict[str, Any]]) -> None:
    base, _ = server
    status, text = get(f"{base}/metrics")
    assert status == 200
    assert 'orca_token_refresh_total{login="APEX_1",outcome="login"} 1.0' in text
    for name in (
        "orca_token_refresh_duration_seconds",
        "orca_token_expiry_timestamp_seconds",
        "orca_token_last_success_timestamp_seconds",
        "orca_tradovate_requests_total",
        "orca_redis_up 1.0",
        "orca_leader",
    ):
        assert name in text


def test_probes_answer_json_with_their_status(server: tuple[str, dict[str, Any]]) -> None:
    base, _answers = server
    assert get(f"{base}/healthz") == (200, json.dumps({"status": "ok"}, indent=2))
    status, body = get(f"{base}/readyz")
    assert status == 503
    assert json.loads(body) == {"x": 1}
    assert get(f"{base}/nope")[0] == 404


@pytest.mark.e2e
def test_a_probe_that_raises_is_not_ready() -> None:
    def broken() -> tuple[bool, dict[str, Any]]:
        raise RuntimeError("probe fell over")

    health = HealthServer(("127.0.0.1", 0), Metrics(), healthy=broken, ready=broken)
    health.start()
    try:
        host, port = health.address
        status, body = get(f"http://{host}:{port}/readyz")
    finally:
        health.stop()
    assert status == 503
    assert json.loads(body) == {"error": "RuntimeError"}


def test_readyz_needs_redis_and_a_valid_token_for_every_login(
    fake_tradovate: FakeTradovate,
) -> None:
    store = fakeredis.FakeRedis(decode_responses=True)
    daemon = Daemon(
        settings_for(fake_tradovate),
        redis_client=store,
        lease_client=store,
        notifier=Notifier(environ={}),
    )
    ready, body = daemon.readyz()
    assert not ready
    assert body["redis"] == {"up": None}
    daemon.redis_health.succeeded()
    assert daemon.readyz()[0] is False  # it does not know yet which logins are its own
    daemon.ownership.round(daemon.membership.heartbeat())  # alone: it owns every login at once
    assert sorted(daemon.owned()) == ["APEX_1", "APEX_2"]
    ready, body = daemon.readyz()
    assert not ready
    assert body["logins"]["APEX_1"]["token"] == "missing"
    store.set("token:APEX_1", make_jwt(time.time() + 600))
    store.set("token:APEX_2", make_jwt(time.time() - 1))
    ready, body = daemon.readyz()
    assert not ready
    assert body["logins"]["APEX_2"]["token"] == "invalid"
    with tradovate_routes(fake_tradovate):
        for name in ("APEX_1", "APEX_2"):
            daemon.refresher.refresh(name, force=True)
    ready, body = daemon.readyz()
    assert ready
    assert {entry["token"] for entry in body["logins"].values()} == {"valid"}
    assert all(len(entry["fingerprint"]) == 8 for entry in body["logins"].values())
    daemon.redis_health.failed(ConnectionError("gone"))
    assert daemon.readyz()[0] is False


def test_scheduler_that_stops_ticking_is_not_healthy(fake_tradovate: FakeTradovate) -> None:
    monotonic = FakeClock(0.0)
    daemon = Daemon(
        settings_for(fake_tradovate),
        redis_client=(store := fakeredis.FakeRedis(decode_responses=True)),
        lease_client=store,
        notifier=Notifier(environ={}),
        monotonic=monotonic,
    )
    assert daemon.healthz()[0] is False  # not started
    assert isinstance(daemon.jobs, JobRunner)  # APScheduler's, by default
    daemon.jobs.scheduler.start(paused=True)
    try:
        assert daemon.healthz()[0] is True
        monotonic.advance(31)  # a paused scheduler never ticks: 31 s later it counts as hung
        ok, body = daemon.healthz()
        assert not ok
        assert body["status"] == "scheduler not running"
    finally:
        daemon.jobs.scheduler.shutdown(wait=False)


@pytest.mark.e2e
def test_every_job_is_scheduled_and_ticks(served_tradovate: FakeTradovate) -> None:
    """A job added paused would never run: the tick (healthz, watchdog) and the reconcile pass
    must both be live once the daemon runs."""
    import threading

    monotonic = FakeClock(0.0)
    daemon = Daemon(
        settings_for(served_tradovate),
        redis_client=(store := fakeredis.FakeRedis(decode_responses=True)),
        lease_client=store,
        notifier=Notifier(environ={}),
        monotonic=monotonic,
    )
    monotonic.advance(31)  # stale until the first tick
    scheduler = daemon.jobs.scheduler if isinstance(daemon.jobs, JobRunner) else None
    assert scheduler is not None  # APScheduler's, by default
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        wait_for(lambda: scheduler.get_job("refresh:APEX_266668"), what="refresh jobs")
        jobs = scheduler.get_jobs()
        assert {"tick", "watch-redis", "reconcile"} <= {job.id for job in jobs}
        assert all(job.next_run_time is not None for job in jobs), jobs
        wait_for(lambda: daemon.healthz()[0], what="the first tick")
    finally:
        daemon.request_stop()
        runner.join(timeout=10)
    assert not runner.is_alive()
