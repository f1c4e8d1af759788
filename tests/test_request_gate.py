"""What one login's refresh requests may cost (`daemon.service.request_gate`), on an injected
clock; and what of the request lists is a request at all (real Redis)."""

from __future__ import annotations

import pytest

from daemon.constants import PROBE_COOLDOWN_S, REFRESH_REQUESTS_KEY, REQUEST_COOLDOWN_S
from daemon.service.request_gate import Admission, RequestGate
from daemon.sim.redis_server import RedisServer
from daemon.store.requests import REQUEST_MAX_BYTES, RefreshRequest, push_request, take_requests


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gate(share: int = 3) -> tuple[RequestGate, Clock]:
    clock = Clock()
    return RequestGate(share=share, window_s=3_600, monotonic=clock), clock


def test_requests_for_a_login_that_is_refreshing_join_it_and_get_its_answer() -> None:
    requests, _ = gate()
    assert requests.admit("A", "1", forced=True) == (Admission.RUN, "")
    assert requests.admit("A", "2", forced=True) == (Admission.JOINED, "")
    assert requests.admit("A", "3", forced=False) == (Admission.JOINED, "")
    assert requests.admit("B", "4", forced=True) == (Admission.RUN, "")  # another login's own
    assert requests.running() == 2
    assert requests.done("A", "renew", forced=True, spent=True) == ["1", "2", "3"]
    assert requests.running() == 1


def test_a_forced_refresh_within_the_cooldown_is_answered_with_the_last_one() -> None:
    requests, clock = gate()
    requests.admit("A", "1", forced=True)
    requests.done("A", "renew", forced=True, spent=True)
    clock.now += PROBE_COOLDOWN_S + 1
    requests.admit("A", "2", forced=False)  # a 401 report's check between them
    requests.done("A", "kept", forced=False, spent=False)
    clock.now += 1
    admission, said = requests.admit("A", "3", forced=True)
    assert admission is Admission.ANSWERED
    assert said == f"coalesced: renew {PROBE_COOLDOWN_S + 2:.0f} s ago"
    clock.now += REQUEST_COOLDOWN_S
    assert requests.admit("A", "4", forced=True)[0] is Admission.RUN


def test_forced_refreshes_past_the_login_s_share_wait_for_the_window() -> None:
    requests, clock = gate(share=2)
    for n in range(2):
        assert requests.admit("A", str(n), forced=True)[0] is Admission.RUN
        requests.done("A", "renew", forced=True, spent=True)
        clock.now += REQUEST_COOLDOWN_S
    admission, said = requests.admit("A", "x", forced=True)
    assert admission is Admission.ANSWERED
    assert said.startswith("deferred: its 2 requested refreshes per window are spent, again in ")
    assert requests.admit("A", "probe", forced=False)[0] is Admission.RUN  # a check costs nothing
    requests.done("A", "kept", forced=False, spent=False)
    clock.now += 3_600
    assert requests.admit("A", "y", forced=True)[0] is Admission.RUN


def test_a_burst_of_401_reports_is_one_check() -> None:
    requests, clock = gate()
    assert requests.admit("A", "1", forced=False)[0] is Admission.RUN
    requests.done("A", "kept", forced=False, spent=False)
    answers = [requests.admit("A", str(n), forced=False) for n in range(2, 40)]
    assert {admission for admission, _ in answers} == {Admission.ANSWERED}
    clock.now += PROBE_COOLDOWN_S
    assert requests.admit("A", "40", forced=False)[0] is Admission.RUN


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("x" * (REQUEST_MAX_BYTES + 1), "too large"),
        ('{"id": "a", "login": "APEX_1"}', "an id push_request never writes"),
        ('{"id": "0123456789abcdef", "login": "token:*"}', "a login name that cannot be one"),
        ('{"id": "0123456789abcdef", "login": 7}', "a login that is not a name"),
        ("[" * 400, "nested"),
    ],
)
def test_what_push_request_never_writes_is_no_request(raw: str, why: str) -> None:
    assert RefreshRequest.parse(raw) is None, why


def test_request_lists_hand_over_requests_and_name_what_is_not_one(
    redis_server: RedisServer,
) -> None:
    client = redis_server.client()
    first = push_request(client, "APEX_1")
    client.rpush(REFRESH_REQUESTS_KEY, "y" * 5_000_000, "{}")
    second = push_request(client, None)
    taken = list(take_requests(client, "me", 10))
    assert [t.id for t in taken if isinstance(t, RefreshRequest)] == [first, second]
    assert [t for t in taken if isinstance(t, str)] == ["5000000 bytes", "2 bytes, not a request"]
    client.set(REFRESH_REQUESTS_KEY, "a string where a list belongs")
    assert list(take_requests(client, "me", 10)) == [
        f"{REFRESH_REQUESTS_KEY} is not a list: dropped"
    ]
    assert not client.exists(REFRESH_REQUESTS_KEY)
    push_request(client, "APEX_2")  # the list works again
    assert len(list(take_requests(client, "me", 10))) == 1
