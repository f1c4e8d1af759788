"""The TradingView route's answer shapes: `{"s": "ok", "d": ...}` or `{"s": "error", ...}`."""

from __future__ import annotations

from typing import Any


def authorized(token: str, expires_at: float, *, with_expiration: bool) -> dict[str, Any]:
    if not with_expiration:
        return {"s": "ok", "d": {"access_token": token}}
    return {"s": "ok", "d": {"access_token": token, "expiration": int(expires_at)}}


def refused(text: str) -> dict[str, Any]:
    return {"s": "error", "errmsg": text}


def tv_accounts(status: int, accounts: Any) -> tuple[int, Any]:
    """TradingView REST's account list: `D…` ids; names are the join with /account/list."""
    if status != 200:
        return status, refused("Access is denied")
    listed = [
        {"id": f"D{a['id']}", "name": a["name"], "type": "demo", "currency": "USD"}
        for a in accounts
    ]
    return 200, {"s": "ok", "d": listed}
