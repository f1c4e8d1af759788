"""Tradovate's documented answers (SPEC, "Tradovate's documented answers"), each met by the
simulator as the published spec and partner docs describe it: none may cost a trader a session
or lock the desk out. Driven by a clock moved by hand."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from daemon.sim.tradovate import ACCOUNTS_PATH, LOGIN_PATH, RENEW_PATH
from daemon.store.status import read_statuses
from daemon.token_format import jwt_expiry
from daemon.tradovate import device_id_for
from tests.helpers import World, build_world, two_login_world

LIFETIME_S = 4_800.0
HOUR_S = 3_600.0


@pytest.fixture
def world() -> Iterator[World]:
    with two_login_world(LIFETIME_S) as built:
        yield built


def logins_sent(world: World, name: str) -> int:
    return sum(1 for body in world.fake.seen.login_bodies if body.get("name") == name)


def test_temporary_locked_parks_an_hour_with_no_further_failed_login(world: World) -> None:
    world.fake.users["APEX_1"].status = "TemporaryLocked"
    attempt = world.refresher.refresh("APEX_1")
    assert (attempt.outcome, attempt.delay_s) == ("locked", HOUR_S)
    world.clock.advance(HOUR_S / 2)
    asked = world.refresher.refresh("APEX_1", force=True, operator=True)
    assert asked.described().startswith("parked (locked) until ")  # an operator cannot shorten it
    assert logins_sent(world, "APEX_1") == 1
    status = read_statuses(world.redis, ["APEX_1"])[0]
    assert status is not None
    assert (status.state, status.last_outcome, status.park_reason) == ("parked", "locked", "locked")
    world.fake.users["APEX_1"].status = "Active"
    world.clock.advance(HOUR_S / 2)
    assert world.refresher.refresh("APEX_1").outcome == "login"


def test_closed_waits_for_an_operator_and_for_a_changed_password_across_restarts(
    world: World,
) -> None:
    world.fake.users["APEX_1"].status = "Closed"
    with capture_logs() as logs:
        attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome == "closed"
    assert attempt.until == math.inf
    failed = next(e for e in logs if e["event"] == "token.refresh_failed")
    assert failed["next_attempt_in"] is None
    world.clock.advance(24 * HOUR_S)
    assert world.refresher.refresh("APEX_1").outcome == "parked"
    assert logins_sent(world, "APEX_1") == 1
    status = read_statuses(world.redis, ["APEX_1"])[0]
    assert status is not None
    assert (status.last_outcome, status.next_attempt_at) == ("closed", None)
    assert status.credential is not None
    assert "pw-" not in status.credential
    # A restart with the same password keeps it parked; the operator tries once at once.
    restarted = build_world(world.fake, world.clock)
    restarted.redis.set("orca:status:APEX_1", world.redis.get("orca:status:APEX_1") or "")
    restarted.adoption.adopt()
    assert restarted.refresher.refresh("APEX_1").outcome == "parked"
    world.fake.users["APEX_1"].status = "Active"
    assert restarted.refresher.refresh("APEX_1", force=True, operator=True).outcome == "login"
    assert logins_sent(world, "APEX_1") == 2


def test_unconfirmed_is_named_and_climbs_the_rejected_ladder(world: World) -> None:
    world.fake.users["APEX_1"].status = "UnconfirmedEmail"
    attempt = world.refresher.refresh("APEX_1")
    assert (attempt.outcome, attempt.delay_s) == ("unconfirmed", 900)
    assert "UnconfirmedEmail" in (world.refresher.states["APEX_1"].last_error or "")


def test_423_stops_every_login_of_the_group_for_an_hour_while_renewals_go_on(
    world: World,
) -> None:
    world.refresher.refresh("APEX_2")
    world.fake.inject(LOGIN_PATH, "http_423")
    attempt = world.refresher.refresh("APEX_1")
    assert (attempt.outcome, attempt.delay_s) == ("lockout", HOUR_S)
    world.fake.close_sessions("APEX_2")
    world.refresher.states["APEX_2"].grant = None  # its session is gone: it must log in
    assert world.refresher.refresh("APEX_2").outcome == "deferred"
    assert logins_sent(world, "APEX_2") == 1
    assert logins_sent(world, "APEX_1") == 1
    world.clock.advance(HOUR_S + 1)
    assert world.refresher.refresh("APEX_2").outcome == "login"
    assert world.refresher.refresh("APEX_1").outcome == "login"


def test_a_423_on_a_renewal_keeps_the_token_and_stops_the_groups_logins(world: World) -> None:
    world.refresher.refresh("APEX_1")
    world.fake.inject(RENEW_PATH, "http_423")
    attempt = world.refresher.refresh("APEX_1", force=True)
    assert attempt.outcome == "lockout"
    assert attempt.delay_s < 60  # the renewal is retried soon: it is not the login being locked
    assert world.token("APEX_1") is not None
    assert world.refresher.refresh("APEX_2").outcome == "deferred"


@pytest.mark.parametrize(
    ("fault", "outcome"), [("http_400", "bad_request"), ("http_404", "not_found")]
)
def test_400_and_404_need_a_person_and_keep_the_held_token(
    world: World, fault: str, outcome: str
) -> None:
    world.fake.inject(LOGIN_PATH, fault)
    attempt = world.refresher.refresh("APEX_1")
    assert (attempt.outcome, attempt.delay_s) == (outcome, 900)
    world.refresher.refresh("APEX_2")
    held = world.token("APEX_2")
    world.fake.inject(RENEW_PATH, fault)
    assert world.refresher.refresh("APEX_2", force=True).outcome == outcome
    assert world.token("APEX_2") == held  # in Redis until it expires
    world.clock.advance(899)
    assert world.refresher.refresh("APEX_2").outcome == "parked"


def test_a_captcha_on_a_renewal_stops_the_groups_renewals(world: World) -> None:
    world.refresher.refresh("APEX_1")
    world.refresher.refresh("APEX_2")
    world.fake.inject(RENEW_PATH, "captcha", count=100)
    with capture_logs() as logs:
        first = world.refresher.refresh("APEX_1", force=True)
        second = world.refresher.refresh("APEX_2", force=True)
    assert first.outcome == second.outcome == "deferred"  # `wait` logins keep their tokens
    asked = [path for path, _ in world.fake.seen.requests].count(RENEW_PATH)
    assert asked == 1
    assert any(e["event"] == "budget.renew_captcha" for e in logs)
    assert world.token("APEX_1") is not None
    assert world.token("APEX_2") is not None


def test_a_captcha_on_an_account_list_pauses_that_logins_checks(world: World) -> None:
    world.fake.inject(ACCOUNTS_PATH, "captcha")
    assert world.refresher.refresh("APEX_1").outcome == "login"
    state = world.refresher.states["APEX_1"]
    assert state.accounts_paused_until == pytest.approx(world.clock.now + HOUR_S)
    assert world.token("APEX_1") is not None


def test_a_zero_p_time_waits_fifteen_seconds(world: World) -> None:
    world.fake.inject(LOGIN_PATH, "penalty", p_time_s=0)
    attempt = world.refresher.refresh("APEX_1")
    assert (attempt.outcome, attempt.delay_s) == ("penalty", 15)


def test_a_penalty_on_a_renewal_blocks_the_groups_renewals(world: World) -> None:
    world.refresher.refresh("APEX_1")
    world.fake.inject(RENEW_PATH, "penalty", p_time_s=20)
    assert world.refresher.refresh("APEX_1", force=True).outcome == "deferred"
    assert world.fake.seen.penalties[RENEW_PATH] == 1


def test_device_ids_are_stable_per_login_and_never_from_the_machine(world: World) -> None:
    world.refresher.refresh("APEX_1")
    world.refresher.refresh("APEX_2")
    sent = {name: device for (name, device) in world.fake.seen.device_ids}
    assert sent == {
        "APEX_1": device_id_for("APEX_1", None),
        "APEX_2": device_id_for("APEX_2", None),
    }
    assert sent["APEX_1"] != sent["APEX_2"]
    assert all(len(device) <= 64 and uuid.UUID(device).version == 5 for device in sent.values())
    assert device_id_for("APEX_1", "set-by-hand") == "set-by-hand"


def test_renewals_without_md_tokens_leave_the_access_token_in_mdtoken(world: World) -> None:
    world.refresher.refresh("APEX_1")
    login_md = world.redis.get("mdtoken:APEX_1")
    assert login_md is not None
    assert login_md != world.token("APEX_1")
    for _ in range(3):
        world.clock.advance(LIFETIME_S * 0.85)
        assert world.refresher.refresh("APEX_1").outcome == "renew"
        for name in ("APEX_1", "APEX_1-ACC1"):
            md = world.redis.get(f"mdtoken:{name}")
            assert md is not None
            assert (jwt_expiry(md) or 0) > world.clock.now
            assert 0 < world.redis.ttl(f"mdtoken:{name}") <= world.redis.ttl(f"token:{name}")


def test_a_password_expiring_within_a_week_is_warned_about(world: World) -> None:
    world.fake.users["APEX_1"].password_expires_at = world.clock.now + 3 * 86_400
    world.fake.users["APEX_2"].hibp_hint = "EmailAndPasswordCompromised"
    with capture_logs() as logs:
        world.refresher.refresh("APEX_1")
        world.refresher.refresh("APEX_2")
        world.clock.advance(LIFETIME_S * 0.85)
        world.refresher.refresh("APEX_1")
    warned = [e for e in logs if e["event"] == "login.password_expiring"]
    assert [e["login"] for e in warned] == ["APEX_1", "APEX_2"]  # once each, not per renewal
    assert warned[1]["hibp_hint"] == "EmailAndPasswordCompromised"
    assert any(n.startswith("password_expiring") for n in world.refresher.states["APEX_1"].notes)
    expiry = world.metrics.registry.get_sample_value(
        "orca_password_expiry_timestamp_seconds", {"login": "APEX_1"}
    )
    assert expiry == pytest.approx(world.fake.users["APEX_1"].password_expires_at, abs=1)


def test_accounts_that_may_not_trade_get_no_key_and_lose_the_one_they_had(world: World) -> None:
    fake_user = world.fake.users["APEX_2"]
    world.refresher.refresh("APEX_2")
    assert world.token("APEX_2-ACC1") is not None
    fake_user.account_flags = {
        "APEX_2-ACC1": {"active": False},
        "APEX_2-ACC2": {"closed": True},
        "APEX_2-ACC3": {"id": None},  # `id` is optional in the schema: kept by its name
    }
    world.refresher.states["APEX_2"].accounts_fetched_at = None
    world.refresher.refresh("APEX_2")
    assert world.token("APEX_2-ACC1") is None
    assert world.token("APEX_2-ACC2") is None
    assert world.token("APEX_2-ACC3") == world.token("APEX_2")
    fake_user.account_flags = {"APEX_2-ACC3": {"archived": True}}
    world.refresher.states["APEX_2"].accounts_fetched_at = None
    world.refresher.refresh("APEX_2")
    assert world.token("APEX_2-ACC3") is None


def test_a_renewal_that_does_not_move_the_expiry_is_refused_after_one_retry(world: World) -> None:
    world.refresher.refresh("APEX_1")
    expires_at = world.refresher.states["APEX_1"].grant.expires_at  # type: ignore[union-attr]
    world.clock.advance(600)
    world.fake.token_lifetime_s = expires_at - world.clock.now  # the same expirationTime again
    assert world.refresher.refresh("APEX_1", force=True).outcome == "renew"
    world.clock.advance(60)
    world.fake.token_lifetime_s = expires_at - world.clock.now
    with capture_logs() as logs:
        again = world.refresher.refresh("APEX_1", force=True)
    refused = next(e for e in logs if e["event"] == "token.refused")
    assert refused["reason"] == "renewals do not move expirationTime"
    assert again.outcome == "login"  # the held session is given up, a new one opened


def test_a_short_penalty_never_shortens_a_423s_hour(world: World) -> None:
    world.fake.inject(LOGIN_PATH, "http_423")
    assert world.refresher.refresh("APEX_1").outcome == "lockout"
    world.fake.inject(LOGIN_PATH, "penalty", p_time_s=15)
    world.refresher.budget.block("login_failure", 15, world.clock.now)  # a ticket's 15 s
    world.clock.advance(60)
    assert world.refresher.refresh("APEX_2").outcome == "deferred"
    assert logins_sent(world, "APEX_2") == 0


def test_a_token_for_an_unconfirmed_user_is_used_and_the_status_shown(world: World) -> None:
    """userStatus Initiated with a token: the token serves, the status says what is unfinished."""
    from daemon.sim.tradovate import answers

    world.fake.users["APEX_1"].status = "Initiated"
    stops = answers.STOPPING_STATUSES.pop("Initiated")
    try:
        with capture_logs() as logs:
            assert world.refresher.refresh("APEX_1").outcome == "login"
    finally:
        answers.STOPPING_STATUSES["Initiated"] = stops
    assert "unconfirmed: userStatus Initiated" in world.refresher.states["APEX_1"].notes
    assert [e["user_status"] for e in logs if e["event"] == "login.unconfirmed"] == ["Initiated"]


def test_a_forged_status_parks_no_longer_than_tradovate_documents(world: World) -> None:
    """A status is anyone's to write: a park until 2199 is restored as the longest documented
    wait, a rejected back-off as the ladder's 4 h at most."""
    import json

    now = world.clock.now
    forged = {"login": "APEX_1", "last_outcome": "locked", "park_reason": "locked"}
    forged["parked_until"] = "2199-01-01T00:00:00+00:00"
    world.redis.set("orca:status:APEX_1", json.dumps(forged))
    rejected = {"login": "APEX_2", "last_outcome": "rejected", "failures": 1}
    rejected["next_attempt_at"] = "2199-01-01T00:00:00+00:00"
    world.redis.set("orca:status:APEX_2", json.dumps(rejected))
    world.adoption.adopt()
    assert world.refresher.states["APEX_1"].parked_until == pytest.approx(now + 3_600)
    assert world.refresher.states["APEX_2"].not_before == pytest.approx(now + 14_400)
