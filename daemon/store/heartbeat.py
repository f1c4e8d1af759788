"""`orca:heartbeat:{instance}`: each running daemon says it is alive every second, with a TTL,
so `status`, `health` and a standby can answer from Redis alone."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import redis

from daemon.constants import HEARTBEAT_KEY_PREFIX, HEARTBEAT_TTL_S
from daemon.store.client import get_many, scan_batches


@dataclass(frozen=True)
class Heartbeat:
    instance: str
    pid: int
    started_at: str | None
    at: float  # epoch seconds when written
    logins: int
    leader: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def parse(cls, raw: object) -> Heartbeat | None:
        try:
            value = json.loads(raw) if isinstance(raw, str) else None
            if not isinstance(value, dict):
                return None
            started_at = value.get("started_at")
            return cls(
                instance=str(value["instance"]),
                pid=int(value["pid"]),
                started_at=started_at if isinstance(started_at, str) else None,
                at=float(value.get("at", 0.0)),
                logins=int(value.get("logins", 0)),
                leader=value.get("leader") is True,
            )
        except (ValueError, KeyError, TypeError, OverflowError):
            return None


def heartbeat_key(instance: str) -> str:
    return f"{HEARTBEAT_KEY_PREFIX}{instance}"


def write_heartbeat(client: redis.Redis, beat: Heartbeat) -> None:
    client.set(heartbeat_key(beat.instance), beat.to_json(), ex=HEARTBEAT_TTL_S)


def live_instances(client: redis.Redis) -> list[Heartbeat]:
    """Every instance whose heartbeat has not expired, leader first."""
    beats: list[Heartbeat] = []
    for chunk in scan_batches(client, HEARTBEAT_KEY_PREFIX + "*"):
        beats += [b for b in map(Heartbeat.parse, get_many(client, chunk)) if b is not None]
    return sorted(beats, key=lambda b: (not b.leader, b.instance))
