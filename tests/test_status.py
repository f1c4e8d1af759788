"""`orca:status:{login}`: one shape, one parser, one writer."""

from __future__ import annotations

import json

import fakeredis
import pytest

from daemon.outcomes import LoginState, Outcome
from daemon.store.status import LoginStatus, read_statuses, status_key, write_status

FULL = LoginStatus(
    login="APEX_1",
    state=LoginState.FAILING,
    fingerprint="0123abcd",
    expires_at="2026-11-26T05:00:00+00:00",
    source=Outcome.RENEW,
    accounts=("PA1", "PA2"),
    failures=2,
    last_outcome=Outcome.UNAVAILABLE,
    last_error="/auth/renewaccesstoken: HTTP 503",
    last_success_at="2026-11-26T04:00:00+00:00",
    next_attempt_at="2026-11-26T04:00:04+00:00",
    updated_at="2026-11-26T04:00:02+00:00",
    instance="host:1:ab12",
)


def test_what_is_written_reads_back_the_same() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    write_status(client, FULL, ttl_s=600)
    assert 0 < client.ttl(status_key("APEX_1")) <= 600
    assert read_statuses(client, ["APEX_1", "APEX_2"]) == [FULL, None]


def test_the_json_carries_plain_words() -> None:
    value = json.loads(FULL.to_json())
    assert value["state"] == "failing"
    assert value["last_outcome"] == "unavailable"
    assert value["accounts"] == ["PA1", "PA2"]


@pytest.mark.parametrize(
    "raw", [None, "", "not json", "[]", '{"state": "ok"}', '{"login": 5}', b"\xff"]
)
def test_unreadable_values_are_no_status(raw: object) -> None:
    assert LoginStatus.parse(raw) is None


def test_wrong_types_read_as_absent_and_unknown_fields_are_ignored() -> None:
    raw = json.dumps(
        {
            "login": "APEX_1",
            "state": "dancing",
            "source": "telepathy",
            "accounts": ["PA1", 7, "", None],
            "failures": -3,
            "last_error": {"nested": True},
            "a_field_from_a_newer_writer": 1,
        }
    )
    assert LoginStatus.parse(raw) == LoginStatus("APEX_1", accounts=("PA1",))
