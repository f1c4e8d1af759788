"""Which live instance refreshes which login: weighted rendezvous (highest-random-weight) hashing.

Every instance computes the same answer from the same heartbeats, with no coordinator. A login
goes to the member with the highest score `-weight / ln(h)`, where `h` is a hash of the login and
the member in (0, 1): members win in proportion to their weight (the renewals their address may
spend an hour, as configured: what is left of it would move logins at every renewal), and when a
member joins or leaves only the logins it wins or held move, about 1/N of them.

A member is also given no more logins than its address keeps alive by renewal, while another
has room: logins are placed one by one, in an order fixed by their hashes, each with the best
member that has room, or the best member of all when none has.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    instance: str
    weight: float  # renewals an hour this member may spend
    capacity: int  # logins it keeps alive by renewal


def _unit(text: str) -> float:
    """A hash of `text` as a number in (0, 1)."""
    value = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return (value + 1) / (2**64 + 2)


def score(login: str, member: Member) -> float:
    return -max(member.weight, 1e-9) / math.log(_unit(f"{login}\0{member.instance}"))


def assign(logins: Sequence[str], members: Sequence[Member]) -> dict[str, str]:
    """{login: instance} over the members (none: an empty answer)."""
    if not members:
        return {}
    load = dict.fromkeys((m.instance for m in members), 0)
    owners: dict[str, str] = {}
    for login in sorted(logins, key=lambda name: (_unit(name), name)):
        ranked = sorted(members, key=lambda m: (-score(login, m), m.instance))
        roomy = [m for m in ranked if load[m.instance] < m.capacity]
        chosen = (roomy or ranked)[0]
        owners[login] = chosen.instance
        load[chosen.instance] += 1
    return owners
