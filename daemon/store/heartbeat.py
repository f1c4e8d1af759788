"""`orca:heartbeat:{instance}`: each running daemon says it is alive every second, with a TTL.

The live heartbeats are the membership logins are shared over (`daemon.service.ownership`):
each carries what the others need to agree on an assignment (protocol, budget group, the
renewals its address may spend and the logins they keep alive), and what `status` and `health`
show. A heartbeat without a protocol is an older daemon's: protocol 1, the single leader lease.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import redis

from daemon.constants import (
    HEARTBEAT_KEY_PREFIX,
    HEARTBEAT_MAX_BYTES,
    HEARTBEAT_TTL_S,
    INSTANCES_KEY,
    MAX_RENEW_BUDGET_PER_HOUR,
)
from daemon.store.client import get_many, pipeline
from daemon.store.foreign import report_foreign
from daemon.values import json_object

LEGACY_PROTOCOL = 1


@dataclass(frozen=True)
class Heartbeat:
    instance: str
    pid: int
    started_at: str | None
    at: float  # epoch seconds when written
    logins: int  # configured
    owned: int = 0  # logins whose lease it holds
    protocol: int = LEGACY_PROTOCOL
    standby: bool = False  # takes no logins (an instance of another protocol runs)
    group: str = ""
    address: str | None = None  # TRADOVATE_LOCAL_ADDRESS
    renew_usable: int = 0  # renewals an hour its group may spend (configured, not what is left)
    keeps_alive: int = 0  # logins its group keeps alive by renewal
    logins_digest: str = ""  # of the configured login names: only equal lists are shared

    @property
    def owns_logins(self) -> bool:
        """Refreshes tokens now (SPEC's `orca_leader`)."""
        return self.owned > 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def parse(cls, raw: object) -> Heartbeat | None:
        """A heartbeat as this protocol writes it, or None: larger than any, not an object, or
        with a weight no configuration gives (a forged one would pull every login to itself)."""
        if isinstance(raw, str | bytes) and len(raw) > HEARTBEAT_MAX_BYTES:
            return None
        try:
            value = json_object(raw)
            if value is None:
                return None
            started_at, address = value.get("started_at"), value.get("address")
            owned = value.get("owned")
            beat = cls(
                instance=str(value["instance"]),
                pid=int(value["pid"]),
                started_at=started_at if isinstance(started_at, str) else None,
                at=float(value.get("at", 0.0)),
                logins=int(value.get("logins", 0)),
                # A protocol-1 daemon said only whether it led: then it owned every login.
                owned=int(owned)
                if owned is not None
                else int(value.get("logins", 0))
                if value.get("leader") is True
                else 0,
                protocol=int(value.get("protocol", LEGACY_PROTOCOL)),
                standby=value.get("standby") is True,
                group=str(value.get("group", "")),
                address=address if isinstance(address, str) else None,
                renew_usable=int(value.get("renew_usable", 0)),
                keeps_alive=int(value.get("keeps_alive", 0)),
                logins_digest=str(value.get("logins_digest", "")),
            )
        except (ValueError, KeyError, TypeError, OverflowError):
            return None
        return beat if beat._plausible() else None

    def _plausible(self) -> bool:
        return (
            math.isfinite(self.at)
            and self.logins >= 0
            and 0 <= self.owned <= self.logins
            and 0 <= self.renew_usable <= MAX_RENEW_BUDGET_PER_HOUR
            and 0 <= self.keeps_alive <= 1_000_000
            and len(self.instance) <= 200
        )


def logins_digest(logins: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(sorted(logins)).encode()).hexdigest()[:12]


def heartbeat_key(instance: str) -> str:
    return f"{HEARTBEAT_KEY_PREFIX}{instance}"


def write_heartbeat(client: redis.Redis, beat: Heartbeat) -> None:
    pipe = pipeline(client, transaction=False)
    pipe.set(heartbeat_key(beat.instance), beat.to_json(), ex=HEARTBEAT_TTL_S)
    pipe.sadd(INSTANCES_KEY, beat.instance)
    for result in pipe.execute(raise_on_error=False):
        if isinstance(result, redis.ResponseError):
            _replace_foreign_set(client, result)
            client.sadd(INSTANCES_KEY, beat.instance)


def _replace_foreign_set(client: redis.Redis, error: redis.ResponseError) -> None:
    """`orca:instances` of another type (another program's SET) is the daemon's to replace;
    any other refusal (NOPERM) is raised."""
    if not str(error).startswith("WRONGTYPE"):
        raise error
    report_foreign(INSTANCES_KEY, "not a set (replaced)")
    client.delete(INSTANCES_KEY)


def remove_heartbeat(client: redis.Redis, instance: str) -> None:
    pipe = pipeline(client, transaction=False)
    pipe.delete(heartbeat_key(instance))
    pipe.srem(INSTANCES_KEY, instance)
    pipe.execute()


def live_instances(client: redis.Redis) -> list[Heartbeat]:
    """Every instance whose heartbeat has not expired, those refreshing first (two round
    trips, whatever else Redis holds); the set's members whose heartbeat expired are pruned."""
    try:
        members = sorted(str(m) for m in client.smembers(INSTANCES_KEY))
    except redis.ResponseError as error:
        _replace_foreign_set(client, error)
        return []
    raws = get_many(client, [heartbeat_key(m) for m in members])
    beats = [Heartbeat.parse(raw) for raw in raws]
    for member, raw, beat in zip(members, raws, beats, strict=True):
        if beat is None and raw is not None:
            report_foreign(heartbeat_key(member), "not a heartbeat this protocol writes", raw)
    dead = [member for member, beat in zip(members, beats, strict=True) if beat is None]
    if dead:
        client.srem(INSTANCES_KEY, *dead)
    live = [beat for beat in beats if beat is not None]
    return sorted(live, key=lambda b: (not b.owns_logins, b.instance))
