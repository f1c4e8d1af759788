"""State under `orca:*` that another program wrote: a leader, a lease, a heartbeat. Each is
believed only while it behaves like what this protocol writes (real Redis, no daemon)."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from daemon.constants import (
    HEARTBEAT_MAX_BYTES,
    LEASE_TTL_S,
    LEGACY_LEADER_KEY,
    MEMBER_IDLE_ROUNDS,
    MEMBERSHIP_SETTLED_ROUNDS,
    PROTOCOL_VERSION,
)
from daemon.service.ownership import Ownership
from daemon.sim.redis_server import RedisServer
from daemon.store.heartbeat import Heartbeat, heartbeat_key, logins_digest, write_heartbeat
from daemon.store.lease import holders, lease_key

LOGINS = [f"EVAL_{n:02d}" for n in range(12)]
FORGED = "not-a-lease-value-\u00e9"


def beat(instance: str, **fields: object) -> Heartbeat:
    values: dict[str, object] = {
        "pid": 1,
        "at": 0.0,
        "logins": len(LOGINS),
        "protocol": PROTOCOL_VERSION,
        "group": instance,
        "renew_usable": 14,
        "keeps_alive": 15,
        "logins_digest": logins_digest(LOGINS),
        **fields,
    }
    return Heartbeat(instance, started_at="2026-12-02T06:00:00+00:00", **values)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_legacy_leader_without_a_ttl_is_nobody_and_is_said_once(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    client.set(LEGACY_LEADER_KEY, "x")  # no TTL: no protocol-1 daemon renews it
    ownership = Ownership(client, "a", LOGINS)
    with capture_logs() as logs:
        plans = [ownership.round(beat("a")) for _ in range(3)]
    assert ownership.standby is None
    assert sorted(plans[0].taken) == LOGINS
    ignored = [e for e in logs if e["event"] == "cluster.legacy_leader_ignored"]
    assert len(ignored) == 1
    assert ignored[0]["key"] == LEGACY_LEADER_KEY
    assert ignored[0]["why"] == "no TTL"


@pytest.mark.parametrize(("ttl_ms", "stands_by"), [(10_000, True), (3_600_000, False)])
def test_a_legacy_leader_keeps_instances_standing_by_only_with_a_lease_s_ttl(
    redis_server: RedisServer, ttl_ms: int, stands_by: bool
) -> None:
    client = redis_server.client()
    client.set(LEGACY_LEADER_KEY, "host:1:aaaa:bbbbbbbb", px=ttl_ms)
    ownership = Ownership(client, "a", LOGINS)
    plan = ownership.round(beat("a"))
    assert (ownership.standby is not None) is stands_by
    assert (plan.taken == []) is stands_by


@pytest.mark.parametrize("ttl_ms", [None, 10**9])
def test_a_forged_lease_without_a_lease_s_ttl_is_taken_back_at_once(
    redis_server: RedisServer, ttl_ms: int | None
) -> None:
    client = redis_server.client()
    client.set(lease_key(LOGINS[0]), FORGED, px=ttl_ms)
    ownership = Ownership(client, "a", LOGINS)
    with capture_logs() as logs:
        plan = ownership.round(beat("a"))
    assert sorted(plan.taken) == LOGINS
    assert holders(client, LOGINS) == dict.fromkeys(LOGINS, "a")
    assert 0 < client.pttl(lease_key(LOGINS[0])) <= LEASE_TTL_S * 1000
    said = [e for e in logs if e["event"] == "lease.foreign"]
    assert [e["key"] for e in said] == [lease_key(LOGINS[0])]
    assert len(said[0]["fingerprint"]) == 8
    assert FORGED not in json.dumps(logs, default=str)  # named by fingerprint, never content
    assert ownership.unheld == 0


def test_a_forged_lease_renewed_by_no_live_instance_is_taken_back_within_a_lease_period(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    clock = Clock()
    forged = "ghost-host:1:deadbeef"  # looks like a lease; its holder has no heartbeat
    ownership = Ownership(client, "a", LOGINS, monotonic=clock)
    client.set(lease_key(LOGINS[0]), forged, px=LEASE_TTL_S * 1000)
    ownership.round(beat("a"))
    assert holders(client, [LOGINS[0]]) == {LOGINS[0]: "ghost-host:1"}
    assert ownership.unheld == 1  # nobody live refreshes it: OrcaLoginsUnrefreshed counts it
    taken_at = None
    for second in range(1, 2 * LEASE_TTL_S + 1):
        clock.now += 1
        client.set(lease_key(LOGINS[0]), forged, px=LEASE_TTL_S * 1000, xx=True)  # renewed
        if LOGINS[0] in ownership.round(beat("a")).taken:
            taken_at = second
            break
    assert taken_at is not None
    assert taken_at <= LEASE_TTL_S + 2
    assert holders(client, [LOGINS[0]]) == {LOGINS[0]: "a"}


def test_a_lease_of_a_live_instance_is_never_taken_back(redis_server: RedisServer) -> None:
    client = redis_server.client()
    clock = Clock()
    write_heartbeat(client, beat("b", owned=1))
    client.set(lease_key(LOGINS[0]), "b:0123abcd", px=LEASE_TTL_S * 1000)
    ownership = Ownership(client, "a", LOGINS, monotonic=clock)
    for _ in range(3 * LEASE_TTL_S):
        clock.now += 1
        write_heartbeat(client, beat("b", owned=1))
        client.pexpire(lease_key(LOGINS[0]), LEASE_TTL_S * 1000)
        ownership.round(beat("a"))
    assert holders(client, [LOGINS[0]]) == {LOGINS[0]: "b"}


def test_a_heartbeat_of_no_instance_is_left_out_once_it_takes_nothing(
    redis_server: RedisServer,
) -> None:
    """A forged heartbeat, plausible in every field, pulls logins to an instance that does not
    exist; once it has taken none of them for MEMBER_IDLE_ROUNDS, it is left out."""
    client = redis_server.client()
    ownership = Ownership(client, "a", LOGINS)
    rounds = 0
    with capture_logs() as logs:
        while sorted(ownership.leases.held()) != LOGINS:
            write_heartbeat(client, beat("ghost", renew_usable=10_000))
            ownership.round(beat("a"))
            rounds += 1
            assert rounds <= MEMBER_IDLE_ROUNDS + 2 * MEMBERSHIP_SETTLED_ROUNDS + 2
    idle = [e for e in logs if e["event"] == "cluster.member_idle"]
    assert [e["member"] for e in idle] == ["ghost"]
    assert ownership.unheld == 0


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("{" + " " * HEARTBEAT_MAX_BYTES + "}", "larger than any heartbeat"),
        ("[" * 5_000, "nested"),
        (beat("x", renew_usable=10**9).to_json(), "a weight no configuration gives"),
        (beat("x", owned=99, logins=12).to_json(), "owns more than it knows"),
        (beat("x", renew_usable=-1).to_json(), "a negative weight"),
        (beat("x").to_json().replace('"at": 0.0', '"at": NaN'), "a time that is no number"),
    ],
)
def test_a_heartbeat_no_instance_writes_is_no_member(
    redis_server: RedisServer, raw: str, why: str
) -> None:
    client = redis_server.client()
    client.set(heartbeat_key("x"), raw)
    client.sadd("orca:instances", "x")
    assert Heartbeat.parse(raw) is None, why
    ownership = Ownership(client, "a", LOGINS)
    assert sorted(ownership.round(beat("a")).taken) == LOGINS  # alone, at once
