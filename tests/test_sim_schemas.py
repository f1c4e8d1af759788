"""The simulator answers as Tradovate's published spec does: its login, renewal and account
answers are checked against schemas written here from SPEC's facts (required fields, enums,
lengths), so the daemon is never proven against answers Tradovate would not give."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.sim.tradovate import ACCOUNTS_PATH, LOGIN_PATH, RENEW_PATH, FakeTradovate
from tests.helpers import FakeClock, user

USER_STATUSES = ("Active", "Closed", "Initiated", "TemporaryLocked", "UnconfirmedEmail")
# AccessTokenResponse: every field optional; `mdAccessToken` is not in the published schema.
ACCESS_TOKEN_RESPONSE: dict[str, Any] = {
    "required": (),
    "fields": {
        "errorText": str,
        "accessToken": str,
        "expirationTime": str,
        "passwordExpirationTime": str,
        "userStatus": USER_STATUSES,
        "userId": int,
        "name": str,
        "hasLive": bool,
        "hibpHint": str,
        "mdAccessToken": str,
    },
    "max_chars": {"accessToken": 8_192},
}
ACCOUNT: dict[str, Any] = {
    "required": (
        "name",
        "userId",
        "accountType",
        "active",
        "clearingHouseId",
        "riskCategoryId",
        "autoLiqProfileId",
        "marginAccountType",
        "legalStatus",
        "timestamp",
    ),
    "fields": {
        "id": int,
        "name": str,
        "userId": int,
        "accountType": ("Customer", "Employee", "Giveup", "House", "Omnibus", "Wash"),
        "active": bool,
        "clearingHouseId": int,
        "riskCategoryId": int,
        "autoLiqProfileId": int,
        "marginAccountType": ("Hedger", "Speculator"),
        "legalStatus": str,
        "timestamp": str,
        "restricted": bool,
        "closed": bool,
        "archived": bool,
    },
    "max_chars": {"name": 64},
}


def problems(value: Any, schema: dict[str, Any]) -> list[str]:
    if not isinstance(value, dict):
        return ["not an object"]
    found = [f"missing {name}" for name in schema["required"] if name not in value]
    for name, item in value.items():
        kind = schema["fields"].get(name)
        if kind is None:
            found.append(f"unknown field {name}")
        elif isinstance(kind, tuple):
            if item not in kind:
                found.append(f"{name}={item!r} not in the enum")
        elif not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
            found.append(f"{name} is not {kind.__name__}")
        elif isinstance(item, str) and len(item) > schema["max_chars"].get(name, 1 << 30):
            found.append(f"{name} too long")
    if "userId" in value and isinstance(value["userId"], int) and value["userId"] <= 0:
        found.append("userId must be > 0")
    return found


@pytest.fixture
def fake() -> FakeTradovate:
    return FakeTradovate([user("APEX_1", accounts=3)], clock=FakeClock())


def login(fake: FakeTradovate, password: str | None = None) -> Any:
    body = {"name": "APEX_1", "password": password or fake.users["APEX_1"].password}
    return fake.answer("POST", LOGIN_PATH, {**body, "sec": fake.sec, "deviceId": "d"}, None)


def test_login_and_renewal_answers_follow_access_token_response(fake: FakeTradovate) -> None:
    status, answer = login(fake)
    assert status == 200
    assert problems(answer, ACCESS_TOKEN_RESPONSE) == []
    assert "mdAccessToken" in answer  # the login answer carries one
    status, renewed = fake.answer("GET", RENEW_PATH, None, answer["accessToken"])
    assert status == 200
    assert problems(renewed, ACCESS_TOKEN_RESPONSE) == []
    assert "mdAccessToken" not in renewed  # not in the published schema: only when asked
    fake.renew_md_tokens = True
    _, asked = fake.answer("GET", RENEW_PATH, None, renewed["accessToken"])
    assert "mdAccessToken" in asked
    assert fake.seen.device_ids[("APEX_1", "d")] == 1


@pytest.mark.parametrize(
    "user_status", ["Closed", "Initiated", "TemporaryLocked", "UnconfirmedEmail"]
)
def test_every_user_status_that_stops_a_login_is_answered_as_the_schema_says(
    fake: FakeTradovate, user_status: str
) -> None:
    fake.users["APEX_1"].status = user_status
    fake.users["APEX_1"].password_expires_at = 2_000_000_000
    _, answer = login(fake)
    assert problems(answer, ACCESS_TOKEN_RESPONSE) == []
    assert answer["userStatus"] == user_status
    assert answer["errorText"]
    assert "accessToken" not in answer


def test_failures_penalties_and_extras_follow_the_schema(fake: FakeTradovate) -> None:
    _, wrong = login(fake, password="wrong")
    assert problems(wrong, ACCESS_TOKEN_RESPONSE) == []
    fake.users["APEX_1"].hibp_hint = "EmailAndPasswordCompromised"
    fake.users["APEX_1"].password_expires_at = 2_000_000_000
    _, answer = login(fake)
    assert problems(answer, ACCESS_TOKEN_RESPONSE) == []
    assert answer["passwordExpirationTime"].endswith("Z")


def test_account_items_follow_account_and_carry_the_flags(fake: FakeTradovate) -> None:
    _, answer = login(fake)
    fake.users["APEX_1"].account_flags = {
        "APEX_1-ACC1": {"active": False, "closed": True},
        "APEX_1-ACC2": {"id": None},
    }
    status, items = fake.answer("GET", ACCOUNTS_PATH, None, answer["accessToken"])
    assert status == 200
    assert [problems(item, ACCOUNT) for item in items] == [[], [], []]
    assert "id" not in items[1]
    assert (items[0]["active"], items[0]["closed"]) == (False, True)
    fake.users["APEX_1"].accounts_denied = True
    assert fake.answer("GET", ACCOUNTS_PATH, None, answer["accessToken"])[0] == 401


def test_budgets_are_per_24(fake: FakeTradovate) -> None:
    """All of 127.0.0.x is one budget; 127.0.1.1 has its own."""
    _, answer = login(fake)
    token = answer["accessToken"]
    for _ in range(15):
        _, renewed = fake.answer("GET", RENEW_PATH, None, token, address="127.0.0.1")
        token = renewed["accessToken"]
    assert "p-ticket" in fake.answer("GET", RENEW_PATH, None, token, address="127.0.0.2")[1]
    assert "accessToken" in fake.answer("GET", RENEW_PATH, None, token, address="127.0.1.1")[1]


@pytest.mark.parametrize(
    ("kind", "status"),
    [("http_400", 400), ("http_403", 403), ("http_404", 404), ("http_423", 423), ("http_429", 429)],
)
def test_documented_statuses_can_be_injected(fake: FakeTradovate, kind: str, status: str) -> None:
    fake.inject(LOGIN_PATH, kind)
    answered, body = login(fake)
    assert answered == status
    if kind == "http_429":
        assert body == b""  # Tradovate's 429 has an empty body


def test_a_penalty_can_be_injected_on_a_renewal(fake: FakeTradovate) -> None:
    _, answer = login(fake)
    fake.inject(RENEW_PATH, "penalty", p_time_s=15)
    _, penalty = fake.answer("GET", RENEW_PATH, None, answer["accessToken"])
    assert penalty["p-time"] == 15
    assert penalty["p-ticket"]
