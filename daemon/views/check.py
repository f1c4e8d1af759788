"""Tables of what is in Redis, in the spirit of the reference's check_all_redis.py.
Token values are never shown: a fingerprint names each one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

from daemon.constants import HFT_KEY_PREFIX, PRICE_KEY_PREFIX
from daemon.outcomes import TokenState
from daemon.store.budget import read_capacities
from daemon.store.client import key_count, scan_batches
from daemon.store.status import LoginStatus, read_statuses
from daemon.store.tokens import (
    EXPIRING_SOON_S,
    StoredToken,
    fingerprint,
    iter_tokens,
    judged,
    key_names,
    read_token_keys,
    token_key,
)
from daemon.views.table import table


@dataclass(frozen=True)
class TokenRow:
    name: str
    login: str
    ttl_s: int | None  # None: no key
    state: TokenState
    fingerprint: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def token_rows(
    client: redis.Redis,
    logins: Sequence[str],
    *,
    now: float,
    expiring_within_s: float = EXPIRING_SOON_S,
) -> list[TokenRow]:
    """Every configured login and each account it wrote (from its status), in two round trips."""
    names: list[tuple[str, str, LoginStatus | None]] = []
    for login, status in zip(logins, read_statuses(client, list(logins)), strict=True):
        accounts = status.accounts if status else ()
        names += [(name, login, status) for name in key_names(login, accounts)]
    keys = read_token_keys(client, [name for name, _, _ in names])
    rows = []
    for key, (name, login, status) in zip(keys, names, strict=True):
        if key.token is None:
            rows.append(TokenRow(name, login, None, TokenState.MISSING, None))
            continue
        state = judged(key.token, status, now, expiring_within_s=expiring_within_s)
        ttl = key.ttl_s if key.ttl_s >= 0 else None
        rows.append(TokenRow(name, login, ttl, state, fingerprint(key.token)))
    return rows


_MARKS = {"valid": "✅ valid", "expiring": "⚠️  expiring", "missing": "❌ missing"}


def render_token_table(rows: Iterable[TokenRow]) -> str:
    lines = []
    for row in rows:
        key = token_key(row.name)
        ttl = f"TTL: {row.ttl_s}s ({row.ttl_s / 3600:.2f}h)" if row.ttl_s is not None else "TTL: -"
        mark = _MARKS.get(row.state, f"❌ {row.state}")
        print_fp = f" | {row.fingerprint}" if row.fingerprint else ""
        lines.append(f"{key:<32} | {ttl:<22} | {mark}{print_fp}")
    return "\n".join(lines)


def render_token_list(found: Iterable[StoredToken]) -> str:
    """`tokens list`: every token key with its TTL, state and fingerprint, then the count."""
    rows = [(token_key(t.name), f"{t.ttl_s}s", t.state, t.fingerprint) for t in found]
    return f"{table(rows, ('key', 'ttl', 'state', 'fingerprint'))}\n\nTotal tokens: {len(rows)}"


KEY_SAMPLE = 50  # hft: and price: keys listed by `check`; the rest are counted


def _sampled_keys(client: redis.Redis, match: str) -> dict[str, object]:
    """How many keys match, and the first few with their TTLs (SCAN: never KEYS)."""
    count, sample = 0, list[str]()
    for chunk in scan_batches(client, match):
        if len(sample) < KEY_SAMPLE:
            sample.extend(chunk[: KEY_SAMPLE - len(sample)])
        count += len(chunk)
    pipe = client.pipeline(transaction=False)
    for key in sample:
        pipe.ttl(key)
    ttls = pipe.execute() if sample else []
    keys = [{"key": k, "ttl_s": int(t)} for k, t in zip(sample, ttls, strict=True) if t != -2]
    return {"count": count, "keys": sorted(keys, key=lambda k: str(k["key"]))}


def check_report(
    client: redis.Redis, logins: Sequence[str], *, target: str, now: float
) -> dict[str, Any]:
    """What check_all_redis.py printed: connection, token keys, hft keys, price keys, total."""
    try:
        client.ping()
    except redis.RedisError as error:
        return {"ok": False, "redis": {"connected": False, "target": target, "error": str(error)}}
    rows = token_rows(client, logins, now=now, expiring_within_s=renewal_lead_s(client))
    known = {row.name for row in rows}
    rows += [
        TokenRow(t.name, t.login or "", t.ttl_s, t.state, t.fingerprint)
        for t in sorted(iter_tokens(client=client), key=lambda t: t.name)
        if t.name not in known
    ]
    configured = set(logins)
    ok = all(row.state.usable for row in rows if row.name in configured)
    return {
        "ok": ok,
        "redis": {"connected": True, "target": target},
        "tokens": [row.as_dict() for row in rows],
        "hft": _sampled_keys(client, HFT_KEY_PREFIX + "*"),
        "prices": _sampled_keys(client, PRICE_KEY_PREFIX + "*"),
        "total_keys": key_count(client),
    }


def renewal_lead_s(client: redis.Redis) -> float:
    """How long before expiry tokens are renewed now, as the daemons publish it (the earliest
    of their groups'): a token closer to its expiry than that is `expiring`. 15 minutes when
    no daemon says; later while renewals are short (down to ORCA_RENEW_LEAD_FLOOR)."""
    leads = [
        float(lead)
        for capacity in read_capacities(client)
        if isinstance(lead := capacity.get("renew_lead_s"), int | float) and lead > 0
    ]
    return min(leads, default=EXPIRING_SOON_S)


def render_check(report: dict[str, Any]) -> str:
    redis_state = report["redis"]
    if not redis_state["connected"]:
        return f"Redis Connection: ❌ Failed ({redis_state['target']}: {redis_state['error']})"
    lines = [
        f"Redis Connection: ✅ Connected ({redis_state['target']})",
        "================================",
        "",
        "Token Keys:",
        "-----------",
        render_token_table(TokenRow(**row) for row in report["tokens"]) or "(none)",
    ]
    for title, section in (("HFT Cache Keys:", report["hft"]), ("Price Keys:", report["prices"])):
        lines += ["", title, "-" * len(title)]
        lines += [f"{k['key']} | TTL: {k['ttl_s']}s" for k in section["keys"]] or ["(none)"]
        if section["count"] > len(section["keys"]):
            lines.append(f"... and {section['count'] - len(section['keys'])} more")
    lines += ["", f"Total keys in Redis (every kind): {report['total_keys']}"]
    return "\n".join(lines)
