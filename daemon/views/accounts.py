"""Each login's accounts as Tradovate lists them for the token in Redis (`orca-tokens accounts`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from daemon.store.tokens import fingerprint, login_tokens
from daemon.tradovate import TradovateClient, TradovateError


def accounts_report(
    client: redis.Redis, tradovate: TradovateClient, logins: Sequence[str], now: float
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for login, (token, state) in login_tokens(client, list(logins), now).items():
        row: dict[str, Any] = {
            "login": login,
            "token": state,
            "fingerprint": fingerprint(token) if token else None,
            "accounts": [],
            "error": None if state.usable else f"{state} token in Redis",
        }
        if token is not None and state.usable:
            try:
                row["accounts"] = [
                    {"id": a.id, "name": a.name, "active": a.active}
                    for a in tradovate.list_accounts(token)
                ]
            except TradovateError as error:
                row["error"] = str(error)
        rows.append(row)
    return rows


def render_accounts(rows: Sequence[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        if row["error"]:
            lines.append(f"{row['login']}: ❌ {row['error']}")
            continue
        lines.append(f"{row['login']} (token {row['fingerprint']}):")
        for account in row["accounts"]:
            active = "active" if account["active"] else "inactive"
            lines.append(f"  → {account['name']} (id {account['id']}, {active})")
    return "\n".join(lines) if rows else "no logins configured or seen in Redis"
