from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import httpx
import pytest
import respx
from structlog.testing import capture_logs

from daemon.logs import register_secrets
from daemon.sim.tradovate import LOGIN_PATH, FakeTradovate
from daemon.sinks.alerts import Alerter, payload_for
from tests.helpers import FakeClock, World, build_world, tradovate_routes, user

HOOK = "https://alerts.example/hook/SeCrEt-PaTh"


def test_payload_shapes() -> None:
    assert payload_for("https://discord.com/api/webhooks/1/x", "hi") == {"content": "hi"}
    assert payload_for("https://hooks.slack.com/services/T/B/x", "hi") == {"text": "hi"}
    assert payload_for(HOOK, "hi") == {"content": "hi", "text": "hi"}


@pytest.fixture
def alerted_world() -> Iterator[tuple[World, list[str]]]:
    clock = FakeClock()
    fake = FakeTradovate([user("APEX_1")], clock=clock)
    sent: list[str] = []
    delivered = threading.Event()

    def hook(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["content"])
        delivered.set()
        return httpx.Response(204)

    with tradovate_routes(fake) as router:
        router.post(HOOK).mock(side_effect=hook)
        world = build_world(fake, clock)
        alerter = Alerter(HOOK)
        world.refresher.reporter.alerts = alerter
        yield world, sent
        alerter.close()


def test_one_alert_when_failing_and_one_on_recovery(
    alerted_world: tuple[World, list[str]],
) -> None:
    world, sent = alerted_world
    world.fake.inject(LOGIN_PATH, "http_500", count=5)
    for _ in range(5):
        world.clock.advance(world.refresher.refresh("APEX_1").delay_s)
    assert world.refresher.refresh("APEX_1").outcome == "login"
    assert world.refresher.reporter.alerts is not None
    world.refresher.reporter.alerts.close()
    assert len(sent) == 2
    assert sent[0].startswith("⚠️ APEX_1: token refresh failing (unavailable")
    assert sent[1] == "✅ APEX_1: token refreshed again after 5 attempts"


def test_alerts_carry_no_secret(alerted_world: tuple[World, list[str]]) -> None:
    world, sent = alerted_world
    password = world.fake.users["APEX_1"].password
    register_secrets(password, world.fake.sec)
    world.fake.inject(LOGIN_PATH, "error_text")
    world.refresher.refresh("APEX_1")
    assert world.refresher.reporter.alerts is not None
    world.refresher.reporter.alerts.close()
    assert len(sent) == 1
    assert "rejected" in sent[0]
    assert password not in sent[0]
    assert world.fake.sec not in sent[0]


def test_captcha_alert_says_a_person_is_needed(alerted_world: tuple[World, list[str]]) -> None:
    world, sent = alerted_world
    world.fake.inject(LOGIN_PATH, "captcha")
    world.refresher.refresh("APEX_1")
    assert world.refresher.reporter.alerts is not None
    world.refresher.reporter.alerts.close()
    assert "a person must log in" in sent[0]


def test_a_webhook_that_hangs_never_slows_a_refresh() -> None:
    release = threading.Event()

    def hanging(request: httpx.Request) -> httpx.Response:
        release.wait(10)
        return httpx.Response(204)

    with respx.mock(assert_all_called=False) as router:
        router.post(HOOK).mock(side_effect=hanging)
        alerter = Alerter(HOOK)
        for n in range(500):  # far more than the queue holds: the rest are dropped
            alerter.send(f"message {n}")
        assert not release.is_set()  # every send returned while the webhook hangs
        release.set()
        alerter.close()


def test_a_webhook_that_is_down_is_logged_without_its_url() -> None:
    with respx.mock(assert_all_called=False) as router:
        router.post(HOOK).mock(side_effect=httpx.ConnectError("refused"))
        with capture_logs() as logs:
            alerter = Alerter(HOOK)
            alerter.send("hello")
            alerter.close()
    assert {"event": "alert.failed", "error": "ConnectError"}.items() <= logs[-1].items()
    assert "SeCrEt" not in repr(logs)
