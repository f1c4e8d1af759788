"""What the server's memory policy does to the daemon's keys. Azure Cache for Redis defaults to
`volatile-lru`, which evicts keys that have a TTL: every key the daemon writes has one, tokens,
budgets, blocks and leases included. Read from INFO (Azure refuses CONFIG GET)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from daemon.store.client import server_info

EVICTION_ADVICE = (
    "prefer maxmemory-policy noeviction, or a cache of its own for the daemon "
    "(docs/deploy.md#azure-cache-for-redis)"
)


@dataclass(frozen=True)
class Memory:
    policy: str | None  # maxmemory-policy (None: the server does not say)
    evicted_keys: int  # since the server started, summed over a cluster's primaries


def read_memory(client: redis.Redis) -> Memory:
    """One INFO of each server: its eviction policy and the keys it has evicted."""
    servers = server_info(client, "all").values()
    policies = sorted({str(s["maxmemory_policy"]) for s in servers if "maxmemory_policy" in s})
    evicted = sum(int(s.get("evicted_keys", 0)) for s in servers)
    return Memory(policies[0] if policies else None, evicted)


def evicts_ours(policy: str | None) -> bool:
    """Whether the policy may evict a key the daemon wrote (all of them have a TTL)."""
    return policy is not None and policy != "noeviction"


def policy_words(policy: str | None) -> str:
    if policy is None:
        return "the server does not say its maxmemory-policy"
    if not evicts_ours(policy):
        return (
            "maxmemory-policy noeviction: nothing the daemon writes is evicted; a full cache "
            "refuses writes (reason oom)"
        )
    which = "keys with a TTL" if policy.startswith("volatile") else "any key"
    return (
        f"maxmemory-policy {policy} evicts {which} when memory is short: every key the daemon "
        "writes has a TTL, tokens and budgets included. Evicted tokens are written back within "
        "5 s and each instance keeps its own budget spends and blocks in memory, but a reader "
        f"may miss a token meanwhile: {EVICTION_ADVICE}"
    )
