"""The shapes of the simulator's answers, written from Tradovate's published schemas (SPEC,
"Tradovate's documented answers"): `AccessTokenResponse` for logins and renewals, `Account` for
each /account/list item."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from daemon.sim.tradovate.desks import FakeUser
from daemon.values import subnet_of

# userStatus values that stop a login, and the errorText that comes with each.
STOPPING_STATUSES = {
    "TemporaryLocked": "The user is temporarily locked",
    "Closed": "The user is closed",
    "UnconfirmedEmail": "Please confirm your e-mail address",
    "Initiated": "The sign-up is not finished",
}


def timestamp(epoch_s: float) -> str:
    """Tradovate's date-time: ISO 8601 UTC with milliseconds and a Z."""
    text = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def access_token_response(
    user: FakeUser, token: str, expires_at: float, md_token: str | None
) -> dict[str, Any]:
    """A successful login or renewal; `mdAccessToken` is not in the published schema and is
    sent only when given."""
    answer: dict[str, Any] = {
        "accessToken": token,
        "expirationTime": timestamp(expires_at),
        "userId": user.user_id,
        "userStatus": user.status,
        "name": user.name,
        "hasLive": False,
    }
    if md_token is not None:
        answer["mdAccessToken"] = md_token
    if user.password_expires_at is not None:
        answer["passwordExpirationTime"] = timestamp(user.password_expires_at)
    if user.hibp_hint is not None:
        answer["hibpHint"] = user.hibp_hint
    return answer


def login_failure(user: FakeUser | None, text: str) -> dict[str, Any]:
    """accesstokenrequest's failure: `errorText`, and `userStatus` when the user's status is
    what stopped it."""
    if user is not None and STOPPING_STATUSES.get(user.status) == text:
        return {"errorText": text, "userStatus": user.status}
    return {"errorText": text}


def account_items(user: FakeUser) -> list[dict[str, Any]]:
    """Every required field of `Account`, and the optional `id` (and flags) per account;
    `account_flags` overrides a field, or removes it when the value is None."""
    items = []
    for n, name in enumerate(user.accounts, start=1):
        item: dict[str, Any] = {
            "id": user.user_id * 100 + n,
            "name": name,
            "userId": user.user_id,
            "accountType": "Customer",
            "active": True,
            "clearingHouseId": 2,
            "riskCategoryId": 1,
            "autoLiqProfileId": 1,
            "marginAccountType": "Speculator",
            "legalStatus": "Individual",
            "timestamp": timestamp(1_700_000_000),
            "restricted": False,
            "closed": False,
            "archived": False,
        }
        for field, value in user.account_flags.get(name, {}).items():
            if value is None:
                item.pop(field, None)
            else:
                item[field] = value
        items.append(item)
    return items


def subnet(address: str) -> str:
    """Tradovate keys budgets and penalty tickets to the caller's /24."""
    return subnet_of(address) or address
