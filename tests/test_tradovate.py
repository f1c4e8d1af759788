from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
import respx

from daemon.config import Login, Secret, TradovateSettings
from daemon.metrics import Metrics
from daemon.token_format import parse_expiration_time
from daemon.tradovate import (
    AccountsDenied,
    AuthPacer,
    CaptchaRequired,
    CredentialsRejected,
    InvalidResponse,
    PenaltyTicket,
    RateLimited,
    TokenRefused,
    TradovateClient,
    TradovateUnavailable,
    device_id_for,
)
from tests.helpers import FakeClock, make_jwt

BASE = "https://demo.tradovateapi.com/v1"
LOGIN = Login("APEX_1", Secret("pw-Secret-1"))
SETTINGS = TradovateSettings(app_id="app", app_version="2.0", cid=7, sec=Secret("the-sec-Zz"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_900_000_000.0)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def client(clock: FakeClock, metrics: Metrics) -> TradovateClient:
    return TradovateClient(SETTINGS, metrics=metrics, clock=clock)


def grant_body(clock: FakeClock, lifetime: float = 5_400) -> dict[str, object]:
    return {
        "accessToken": make_jwt(clock.now + lifetime),
        "mdAccessToken": make_jwt(clock.now + lifetime, use="md"),
        "expirationTime": "2031-01-01T00:00:00.000Z",
        "userId": 99,
        "userStatus": "Active",
        "name": "APEX_1",
        "hasLive": False,
    }


@respx.mock
def test_login_sends_spec_body_and_returns_a_grant(
    client: TradovateClient, clock: FakeClock
) -> None:
    body = grant_body(clock)
    route = respx.post(f"{BASE}/auth/accesstokenrequest").respond(json=body)
    grant = client.login(LOGIN)
    sent = json.loads(route.calls.last.request.content)
    assert sent == {
        "name": "APEX_1",
        "password": "pw-Secret-1",
        "appId": "app",
        "appVersion": "2.0",
        "cid": 7,
        "sec": "the-sec-Zz",
        "deviceId": device_id_for("APEX_1", None),
    }
    assert grant.access_token == body["accessToken"]
    assert grant.md_access_token == body["mdAccessToken"]
    assert grant.source == "login"
    assert grant.user_id == 99
    assert grant.expires_at == clock.now + 5_400  # the earlier of exp and expirationTime
    assert grant.lifetime_s == 5_400
    assert body["accessToken"] not in repr(grant)


@respx.mock
def test_expiration_time_wins_when_it_is_sooner(client: TradovateClient, clock: FakeClock) -> None:
    body = {**grant_body(clock), "expirationTime": clock.now + 600}  # epoch seconds
    respx.post(f"{BASE}/auth/accesstokenrequest").respond(json=body)
    assert client.login(LOGIN).expires_at == clock.now + 600


def test_expiration_time_formats() -> None:
    assert parse_expiration_time("2030-01-01T00:00:00Z") == 1_893_456_000
    assert parse_expiration_time("2030-01-01T00:00:00") == 1_893_456_000  # naive means UTC
    assert parse_expiration_time(1_893_456_000_000) == 1_893_456_000  # epoch milliseconds
    assert parse_expiration_time("soon") is None
    assert parse_expiration_time(True) is None


@respx.mock
def test_error_text_is_a_rejection_without_the_password(client: TradovateClient) -> None:
    respx.post(f"{BASE}/auth/accesstokenrequest").respond(
        json={"errorText": "Incorrect username or password."}
    )
    with pytest.raises(CredentialsRejected, match="Incorrect username or password") as caught:
        client.login(LOGIN)
    assert "pw-Secret-1" not in str(caught.value)
    assert "the-sec-Zz" not in str(caught.value)


@respx.mock
def test_penalty_ticket_and_identical_resend(client: TradovateClient, clock: FakeClock) -> None:
    route = respx.post(f"{BASE}/auth/accesstokenrequest")
    route.side_effect = [
        httpx.Response(200, json={"p-ticket": "T-1", "p-time": 15}),
        httpx.Response(200, json=grant_body(clock)),
    ]
    with pytest.raises(PenaltyTicket) as caught:
        client.login(LOGIN)
    assert (caught.value.ticket, caught.value.wait_s) == ("T-1", 15)
    client.login(LOGIN, p_ticket="T-1")
    first, second = (json.loads(call.request.content) for call in route.calls)
    assert second == {**first, "p-ticket": "T-1"}


@respx.mock
def test_captcha_cannot_be_answered(client: TradovateClient) -> None:
    respx.post(f"{BASE}/auth/accesstokenrequest").respond(
        json={"p-ticket": "T", "p-time": 5, "p-captcha": True}
    )
    with pytest.raises(CaptchaRequired):
        client.login(LOGIN)


@pytest.mark.parametrize(
    ("response", "error", "message"),
    [
        (httpx.Response(429, json={}), RateLimited, "429"),
        (httpx.Response(500, json={}), TradovateUnavailable, "HTTP 500"),
        (httpx.Response(503, html="<html>down</html>"), TradovateUnavailable, "HTTP 503"),
        (httpx.Response(200, html="<html>maintenance</html>"), InvalidResponse, "text/html"),
        (httpx.Response(200, content=b"{nope"), InvalidResponse, "not JSON"),
        (httpx.Response(200, json=[1, 2]), InvalidResponse, "not a JSON object"),
        (httpx.Response(200, json={"userStatus": "Active"}), InvalidResponse, "empty"),
        (httpx.Response(200, json={"accessToken": ""}), InvalidResponse, "empty"),
        (httpx.Response(200, json={"accessToken": "a b"}), InvalidResponse, "whitespace"),
        (httpx.Response(200, json={"accessToken": "x" * 8_193}), InvalidResponse, "longer"),
        (
            httpx.Response(200, json={"accessToken": "opaque"}),
            InvalidResponse,
            "no usable expirationTime",
        ),
        (
            httpx.Response(200, json={"accessToken": "opaque", "expirationTime": "year 10000"}),
            InvalidResponse,
            "no usable expirationTime",
        ),
        (
            httpx.Response(200, json={"accessToken": make_jwt(1_000_000_000)}),
            InvalidResponse,
            "already expired",
        ),
        (
            httpx.Response(
                200, json={"accessToken": "opaque", "expirationTime": "2001-01-01T00:00:00Z"}
            ),
            InvalidResponse,
            "already expired",
        ),
        (httpx.Response(401, json={}), CredentialsRejected, "HTTP 401"),
    ],
)
@respx.mock
def test_every_login_answer_kind(
    client: TradovateClient, response: httpx.Response, error: type[Exception], message: str
) -> None:
    respx.post(f"{BASE}/auth/accesstokenrequest").mock(return_value=response)
    with pytest.raises(error, match=message):
        client.login(LOGIN)


@pytest.mark.parametrize(
    ("exception", "message"),
    [
        (httpx.ConnectTimeout("slow"), "timed out"),
        (httpx.ReadTimeout("slow"), "timed out"),
        (httpx.ConnectError("refused"), "ConnectError"),
        (httpx.RemoteProtocolError("reset"), "RemoteProtocolError"),
    ],
)
@respx.mock
def test_network_faults_are_unavailable(
    client: TradovateClient, metrics: Metrics, exception: Exception, message: str
) -> None:
    respx.post(f"{BASE}/auth/accesstokenrequest").mock(side_effect=exception)
    with pytest.raises(TradovateUnavailable, match=message):
        client.login(LOGIN)
    counted = sum(
        metrics.registry.get_sample_value(
            "orca_tradovate_requests_total",
            {"endpoint": "/auth/accesstokenrequest", "status": status},
        )
        or 0
        for status in ("timeout", "error")
    )
    assert counted == 1


@respx.mock
def test_renew_uses_bearer_and_refusals_are_token_refused(
    client: TradovateClient, clock: FakeClock
) -> None:
    route = respx.get(f"{BASE}/auth/renewaccesstoken")
    route.side_effect = [
        httpx.Response(200, json=grant_body(clock)),
        httpx.Response(401, json={}),
        httpx.Response(200, json={"errorText": "Expired"}),
    ]
    grant = client.renew("old-token")
    assert route.calls[0].request.headers["Authorization"] == "Bearer old-token"
    assert grant.source == "renew"
    with pytest.raises(TokenRefused, match="HTTP 401"):
        client.renew("old-token")
    with pytest.raises(TokenRefused, match="Expired"):
        client.renew("old-token")


@respx.mock
def test_account_list(client: TradovateClient, metrics: Metrics) -> None:
    route = respx.get(f"{BASE}/account/list")
    route.side_effect = [
        httpx.Response(200, json=[{"id": 1, "name": "PA1", "active": True, "userId": 9}]),
        httpx.Response(200, json=[{"id": 1}]),
        httpx.Response(401, json={}),
    ]
    accounts = client.list_accounts("tok")
    assert [(a.id, a.name, a.active) for a in accounts] == [(1, "PA1", True)]
    with pytest.raises(InvalidResponse, match="lacks a name"):
        client.list_accounts("tok")
    with pytest.raises(AccountsDenied, match="HTTP 401"):
        client.list_accounts("tok")
    assert (
        metrics.registry.get_sample_value(
            "orca_tradovate_requests_total", {"endpoint": "/account/list", "status": "200"}
        )
        == 2
    )


def test_login_body_needs_credentials(client: TradovateClient) -> None:
    with pytest.raises(ValueError, match="without credentials"):
        client.login_body(Login("APEX_1"))


def test_device_id_is_stable_per_machine_and_login() -> None:
    assert device_id_for("APEX_1", None) == device_id_for("APEX_1", None)
    assert device_id_for("APEX_1", None) != device_id_for("APEX_2", None)
    assert device_id_for("APEX_1", "desk-7") == "desk-7"


def test_pacer_spaces_logins_under_the_limit() -> None:
    clock = FakeClock(0.0)
    pacer = AuthPacer(3, clock=clock)
    assert [pacer.reserve() for _ in range(3)] == [0, 0, 0]
    assert pacer.reserve() == 60  # the 4th waits until the 1st leaves the window
    clock.advance(10)
    assert pacer.reserve() == 50  # queued behind the 4th, fair order
    clock.advance(100)
    assert pacer.reserve() == 0


@pytest.mark.e2e
def test_calls_leave_from_the_configured_local_address() -> None:
    """TRADOVATE_LOCAL_ADDRESS binds the source address (loopback 127.0.0.2 here)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            seen.append(self.client_address[0])
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = TradovateSettings(
            base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
            app_id="app",
            cid=1,
            sec=Secret("the-sec-Zz"),
            local_address="127.0.0.2",
        )
        with pytest.raises(TradovateUnavailable):
            TradovateClient(settings).login(LOGIN)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["127.0.0.2"]
