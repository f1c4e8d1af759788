"""The HFT cache: JSON under `hft:{endpoint}:{params...}`, each endpoint with SPEC's TTL.

    from daemon import cache
    accounts = cache.get_or_fetch("accounts", "PAAPEX2666680000001", fetch=lambda: api.accounts())

`get_or_fetch` calls `fetch` once per key even when many threads miss it at the same moment.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from daemon.constants import HFT_KEY_PREFIX, HFT_TTLS_S
from daemon.store.client import get_redis_client, scan_batches
from daemon.values import SAFE_NAME, json_or_none

T = TypeVar("T")


def cache_key(endpoint: str, *params: object) -> str:
    """hft:{endpoint}:{params...}, e.g. hft:orders:pending:PAAPEX2666680000001:D17158695."""
    if not endpoint or ":" in endpoint or "*" in endpoint:
        raise ValueError(f"endpoint {endpoint!r} must be a non-empty name without ':' or '*'")
    return ":".join([HFT_KEY_PREFIX + endpoint, *(str(p) for p in params)])


def ttl_for(endpoint: str, ttl_s: int | None = None) -> int:
    if ttl_s is not None:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be at least 1 second, not {ttl_s}")
        return ttl_s
    try:
        return HFT_TTLS_S[endpoint]
    except KeyError:
        known = ", ".join(sorted(HFT_TTLS_S))
        raise ValueError(f"no TTL known for endpoint {endpoint!r} ({known}): pass ttl_s") from None


def get(endpoint: str, *params: object, client: redis.Redis | None = None) -> Any | None:
    """The cached JSON value, or None on a miss (or a value that is not JSON)."""
    return json_or_none((client or get_redis_client()).get(cache_key(endpoint, *params)))


# Named for the call site, cache.set(...); this module never needs the builtin set.
def set(
    endpoint: str,
    *params: object,
    value: Any,
    ttl_s: int | None = None,
    client: redis.Redis | None = None,
) -> None:
    """SET hft:... JSON EX ttl (SPEC: accounts 300 s, positions 1 s, orders 1 s, balances 2 s)."""
    payload = json.dumps(value)
    (client or get_redis_client()).set(
        cache_key(endpoint, *params), payload, ex=ttl_for(endpoint, ttl_s)
    )


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


_flights: dict[str, _Flight] = {}
_flights_lock = threading.Lock()


def get_or_fetch(
    endpoint: str,
    *params: object,
    fetch: Callable[[], T],
    ttl_s: int | None = None,
    client: redis.Redis | None = None,
) -> T:
    """Read through the cache: on a miss, one caller runs `fetch` and stores its result while
    every other thread missing the same key waits for that result (single flight). A fetch that
    raises raises in every waiting caller, and nothing is cached."""
    key = cache_key(endpoint, *params)
    ttl = ttl_for(endpoint, ttl_s)
    cached = get(endpoint, *params, client=client)
    if cached is not None:
        result: T = cached
        return result
    with _flights_lock:
        flight = _flights.get(key)
        leading = flight is None
        if flight is None:
            flight = _flights[key] = _Flight()
    if not leading:
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        waited: T = flight.value
        return waited
    try:
        # A caller that missed before the last flight stored its value, and came here after
        # that flight ended, finds the value now: it must not fetch a second time.
        stored = get(endpoint, *params, client=client)
        if stored is not None:
            flight.value = stored
            return stored  # type: ignore[no-any-return]  # the JSON `fetch` returned before
        flight.value = fetch()
        (client or get_redis_client()).set(key, json.dumps(flight.value), ex=ttl)
        fetched: T = flight.value
        return fetched
    except BaseException as error:
        flight.error = error
        raise
    finally:
        with _flights_lock:
            del _flights[key]
        flight.done.set()


def stats(*, client: redis.Redis | None = None) -> dict[str, int]:
    """Keys per endpoint and in total, counted with SCAN in batches: memory stays flat."""
    counts: Counter[str] = Counter()
    for chunk in scan_batches(client or get_redis_client(), HFT_KEY_PREFIX + "*"):
        for key in chunk:
            counts[key.split(":", 2)[1]] += 1
    result = {endpoint: counts.get(endpoint, 0) for endpoint in HFT_TTLS_S}
    result.update(counts)
    result["total"] = sum(counts.values())
    return result


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def clear(endpoint: str | None = None, *, client: redis.Redis | None = None) -> int:
    """UNLINK every key of one endpoint, or of the whole cache, in SCAN-sized batches. An
    endpoint is a name, never a pattern: glob characters in it are matched literally."""
    client = client or get_redis_client()
    if endpoint is not None and not SAFE_NAME.match(endpoint):
        raise ValueError(
            f"{endpoint[:40]!r} is not an endpoint name (letters, digits, _ - .); "
            "patterns are not accepted"
        )
    match = _glob_escape(cache_key(endpoint)) + ":*" if endpoint else HFT_KEY_PREFIX + "*"
    removed = 0
    for chunk in scan_batches(client, match):
        removed += int(client.unlink(*chunk))
    if endpoint:
        removed += int(client.unlink(cache_key(endpoint)))  # a key with no params
    return removed
