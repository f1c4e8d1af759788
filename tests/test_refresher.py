"""The refresh policy, driven by a clock moved by hand against the simulated Tradovate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import fakeredis
import pytest
import redis
from structlog.testing import capture_logs

from daemon.outcomes import Outcome
from daemon.refresh.settle import notes_with
from daemon.sim.tradovate import (
    ACCOUNTS_PATH,
    LOGIN_PATH,
    RECOVERABLE_FAULTS,
    RENEW_PATH,
    FakeTradovate,
)
from daemon.store.tokens import fingerprint, token_state
from daemon.token_format import jwt_expiry
from daemon.tradovate import TokenGrant
from tests.helpers import (
    FakeClock,
    World,
    build_world,
    make_jwt,
    tradovate_routes,
    two_login_world,
    user,
)

LIFETIME_S = 4_800.0


@pytest.fixture
def world() -> Iterator[World]:
    with two_login_world(LIFETIME_S) as built:
        yield built


def test_first_refresh_logs_in_and_writes_every_key(world: World) -> None:
    attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome == "login"
    assert attempt.ok
    token = world.token("APEX_1")
    assert token is not None
    assert world.fake.is_live(token)
    for name in ("APEX_1", "APEX_1-ACC1", "APEX_1-ACC2"):
        assert world.token(name) == token
        assert world.redis.get(f"mdtoken:{name}") is not None
        assert world.redis.ttl(f"token:{name}") <= LIFETIME_S - 60
    status = json.loads(world.redis.get("orca:status:APEX_1") or "{}")
    assert status["state"] == "ok"
    assert status["accounts"] == ["APEX_1-ACC1", "APEX_1-ACC2"]
    # Renewal about 15 minutes before expiry (jittered), or at ORCA_REFRESH_INTERVAL (1 h)
    # when that is sooner and the address's budget fits it for every login, as here.
    renew_in = world.refresher.schedule.renew_at(world.refresher.states["APEX_1"]) - world.clock.now
    assert renew_in == pytest.approx(3_600)
    assert attempt.delay_s == pytest.approx(3_600)
    assert world.count("APEX_1", "login") == 1


def test_renews_instead_of_logging_in_again(world: World) -> None:
    """Each attempt asks Tradovate once: a renewal, and when the account check falls due with
    it (hourly here, as the renewals), the list a second later."""
    delay = world.refresher.refresh("APEX_1").delay_s
    outcomes: list[str] = []
    while outcomes.count("renew") < 10:  # ten token lifetimes' worth of renewals
        world.clock.advance(delay)
        attempt = world.refresher.refresh("APEX_1")
        outcomes.append(str(attempt.outcome))
        delay = attempt.delay_s
        token = world.token("APEX_1")
        assert token is not None
        assert world.fake.is_live(token)
    assert outcomes == ["renew", "kept"] * 9 + ["renew"]
    assert world.fake.seen.sessions_opened["APEX_1"] == 1
    assert world.fake.seen.renewals["APEX_1"] == 10


def test_never_later_than_the_refresh_interval() -> None:
    clock = FakeClock()
    fake = FakeTradovate([user("APEX_1")], token_lifetime_s=86_400, clock=clock)
    with tradovate_routes(fake):
        world = build_world(fake, clock, ORCA_REFRESH_INTERVAL="600")
        assert world.refresher.refresh("APEX_1").delay_s == pytest.approx(600)


def test_refused_renewal_logs_in_again(world: World) -> None:
    delay = world.refresher.refresh("APEX_1").delay_s
    world.fake.inject(RENEW_PATH, "http_500")  # not a refusal: retried, no new session
    world.clock.advance(delay)
    assert world.refresher.refresh("APEX_1").outcome == "unavailable"
    assert world.fake.seen.sessions_opened["APEX_1"] == 1
    # Two more logins elsewhere close the daemon's session; its renewal is refused.
    for _ in range(2):
        world.fake.answer(
            "POST",
            LOGIN_PATH,
            world.refresher.tradovate.login_body(world.refresher.states["APEX_1"].login),
            None,
        )
    world.clock.advance(5)
    with capture_logs() as logs:
        assert world.refresher.refresh("APEX_1").outcome == "login"
    assert any(e["event"] == "token.refused" for e in logs)
    token = world.token("APEX_1")
    assert token is not None
    assert world.fake.is_live(token)


def test_failed_renewal_keeps_the_last_good_token(world: World) -> None:
    delay = world.refresher.refresh("APEX_1").delay_s
    good = world.token("APEX_1")
    world.clock.advance(delay)
    world.fake.inject(RENEW_PATH, "not_json", count=3)
    delays = [world.refresher.refresh("APEX_1").delay_s for _ in range(3)]
    assert world.token("APEX_1") == good
    assert 1 <= delays[0] <= 2
    assert 2 <= delays[1] <= 4
    assert 4 <= delays[2] <= 8
    assert world.refresher.refresh("APEX_1").outcome == "renew"
    assert world.fake.seen.sessions_opened["APEX_1"] == 1


def test_backoff_is_capped_at_five_minutes(world: World) -> None:
    world.fake.inject(LOGIN_PATH, "http_503", count=20)
    delays = []
    for _ in range(20):
        delays.append(world.refresher.refresh("APEX_1").delay_s)
        world.clock.advance(delays[-1])
    assert max(delays) <= 300
    assert delays[-1] >= 150
    assert world.token("APEX_1") is None


def test_token_that_runs_out_while_failing_leads_to_a_login(world: World) -> None:
    world.refresher.refresh("APEX_1")
    world.clock.advance(LIFETIME_S + 1)
    assert world.refresher.refresh("APEX_1").outcome == "login"
    assert world.fake.seen.renewals["APEX_1"] == 0


def test_account_list_fault_still_writes_the_login_token(world: World) -> None:
    world.fake.inject(ACCOUNTS_PATH, "http_500")
    attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome == "unavailable"
    # The account list failed for another reason: the token was still written, for the login.
    assert world.token("APEX_1") is not None
    assert world.token("APEX_1-ACC1") is None
    retry = world.refresher.refresh("APEX_1")
    assert retry.outcome == "kept"
    assert world.token("APEX_1-ACC1") is not None
    assert world.fake.seen.sessions_opened["APEX_1"] == 1


def test_an_older_token_refused_on_account_list_and_on_renewal_is_replaced(world: World) -> None:
    """A minute after its login, a token the account list refuses is tried with one renewal:
    refused too, the session is closed: its keys go and the login logs in, in the same
    refresh (one pass each: the list, the renewal, the login)."""
    world.refresher.refresh("APEX_1")
    dead = world.token("APEX_1")
    world.clock.advance(120)
    world.fake.close_sessions("APEX_1")
    world.refresher.states["APEX_1"].accounts_fetched_at = None  # the check is due
    with capture_logs() as logs:
        assert world.refresher.refresh("APEX_1").outcome == "login"
    assert [e["event"] for e in logs if e["event"].startswith("token.")] == [
        "token.refused",
        "token.refreshed",
    ]
    assert world.fake.seen.renewals["APEX_1"] == 0  # refused: nothing renewed
    assert world.fake.seen.sessions_opened["APEX_1"] == 2
    token = world.token("APEX_1")
    assert token is not None
    assert token != dead
    assert world.fake.is_live(token)
    assert world.count("APEX_1", "login") == 2  # the passes that led to it are not attempts


def test_a_fresh_token_refused_on_account_list_is_kept_and_renewed(world: World) -> None:
    """401 on /account/list for a token a login returned a moment ago is a permission problem
    (the API key's scope, a changed device id): no new session, the token stays, the list is
    asked again on the rejected ladder."""
    world.fake.inject(ACCOUNTS_PATH, "http_401")
    with capture_logs() as logs:
        attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome == "login"
    token = world.token("APEX_1")
    assert token is not None
    assert world.fake.is_live(token)
    assert world.token("APEX_1-ACC1") is None  # its accounts are not known
    denied = next(e for e in logs if e["event"] == "accounts.denied")
    assert (denied["outcome"], denied["accounts_asked_again_in"]) == ("accounts_denied", 900)
    state = world.refresher.states["APEX_1"]
    assert any("API key scope or device id" in note for note in state.notes)
    assert world.count("APEX_1", "accounts_denied") == 1
    world.clock.advance(600)
    assert world.refresher.refresh("APEX_1").outcome == "kept"
    assert ACCOUNTS_PATH not in [path for path, _ in world.fake.seen.requests[2:]]
    world.clock.advance(400)  # the ladder's 15 minutes are over: asked again, allowed now
    world.refresher.refresh("APEX_1")
    assert world.token("APEX_1-ACC1") == world.token("APEX_1")
    assert not any("API key scope" in note for note in state.notes)
    assert world.fake.seen.sessions_opened["APEX_1"] == 1


def test_captcha_parks_the_login(world: World) -> None:
    world.fake.inject(LOGIN_PATH, "captcha")
    with capture_logs() as logs:
        attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome == "captcha"
    assert attempt.delay_s == 3_600
    assert logs[-1]["event"] == "token.refresh_failed"
    assert logs[-1]["log_level"] == "error"
    requests = len(world.fake.seen.requests)
    world.clock.advance(1_800)
    assert world.refresher.refresh("APEX_1").outcome == "parked"
    assert len(world.fake.seen.requests) == requests  # nothing sent while parked
    assert world.count("APEX_1", "parked") == 0  # waiting is not an attempt (README, metrics)
    world.clock.advance(1_801)
    assert world.refresher.refresh("APEX_1").outcome == "login"


def test_penalty_ticket_waits_then_resends_the_identical_body(world: World) -> None:
    world.fake.inject(LOGIN_PATH, "penalty", p_time_s=12)
    with capture_logs() as logs:
        attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome == "penalty"
    assert attempt.delay_s == 12
    assert attempt.deferred
    assert {"event": "tradovate.penalty", "login": "APEX_1", "wait_s": 12.0}.items() <= logs[
        0
    ].items()
    world.clock.advance(12)
    assert world.refresher.refresh("APEX_1").outcome == "login"
    assert world.fake.seen.penalty_resends_ok == 1
    first, resend = world.fake.seen.login_bodies[-2:]
    assert resend == {**first, "p-ticket": resend["p-ticket"]}


def test_rate_limit_parks_that_user_for_an_hour_only(world: World) -> None:
    """429 is Tradovate's per-user limit: that login waits the hour, no other login does."""
    world.fake.inject(LOGIN_PATH, "http_429")
    attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome == "rate_limited"
    assert attempt.delay_s == 3_600
    assert world.refresher.refresh("APEX_2").outcome == "login"
    world.clock.advance(1_800)
    parked = world.refresher.refresh("APEX_1", force=True, operator=True)
    assert (parked.outcome, parked.reason) == ("parked", "rate_limited")
    assert parked.until == pytest.approx(world.clock.now + 1_800)
    assert [path for path, _ in world.fake.seen.requests].count(LOGIN_PATH) == 2
    world.clock.advance(1_800)
    assert world.refresher.refresh("APEX_1").outcome == "login"


def test_a_rejected_password_backs_off_15_30_60_minutes_within_its_share(world: World) -> None:
    """Tradovate allows 5 failed logins an hour per address, for every login together: one
    wrong password backs off 15 min, 30, 60 ..., and never spends more than its share (2 in a
    rolling hour), so the other logins can still log in."""
    world.fake.inject(LOGIN_PATH, "error_text", count=4)
    start = world.clock.now
    tried_at = []
    for _ in range(6):
        before = len(world.fake.seen.login_bodies)
        attempt = world.refresher.refresh("APEX_1")
        if len(world.fake.seen.login_bodies) > before:
            tried_at.append(round(world.clock.now - start))
        world.clock.advance(attempt.delay_s)
    assert tried_at[:3] == [0, 900, 3_600]  # the third waits for its share, not only 30 min
    assert world.count("APEX_1", "rejected") >= 3
    assert world.refresher.refresh("APEX_2").outcome == "login"  # the others are not starved


def test_logins_are_paced_under_the_auth_limit() -> None:
    clock = FakeClock()
    fake = FakeTradovate([user(f"APEX_{n}") for n in range(3)], clock=clock)
    with tradovate_routes(fake):
        world = build_world(fake, clock, ORCA_AUTH_RATE_LIMIT="2")
        outcomes = [world.refresher.refresh(f"APEX_{n}") for n in range(3)]
        assert [a.outcome for a in outcomes] == ["login", "login", "deferred"]
        assert outcomes[2].delay_s == pytest.approx(60)
        assert not outcomes[2].ok
        assert world.count("APEX_2", "deferred") == 0  # waiting is not a failure
        clock.advance(60)
        assert world.refresher.refresh("APEX_2").outcome == "login"


def test_adopted_token_is_kept_until_due_then_renewed_never_logged_in(world: World) -> None:
    world.refresher.refresh("APEX_1")
    token = world.token("APEX_1")
    held = world.refresher.states["APEX_1"].grant
    assert held is not None
    restarted = build_world(world.fake, world.clock)
    restarted.redis = world.redis
    restarted.refresher.keeper.redis = restarted.adoption.redis = world.redis
    assert restarted.adoption.adopt() == 1
    state = restarted.refresher.states["APEX_1"]
    assert state.accounts == ("APEX_1-ACC1", "APEX_1-ACC2")
    assert state.grant is not None
    assert abs(state.grant.expires_at - held.expires_at) < 1  # the recorded expiry
    renewals = world.fake.seen.renewals["APEX_1"]
    first = restarted.refresher.refresh("APEX_1")
    assert first.outcome == "kept"  # the account list confirmed it; no renewal spent
    assert world.fake.seen.renewals["APEX_1"] == renewals
    world.clock.advance(first.delay_s)
    assert restarted.refresher.refresh("APEX_1").outcome == "renew"
    assert world.token("APEX_1") != token
    assert world.fake.seen.sessions_opened["APEX_1"] == 1


def test_expired_unrecorded_or_garbage_tokens_in_redis_are_not_adopted(world: World) -> None:
    world.refresher.refresh("APEX_1")
    restarted = build_world(world.fake, world.clock)
    restarted.refresher.keeper.redis = restarted.adoption.redis = world.redis
    world.clock.advance(world.fake.token_lifetime_s)  # the recorded expiry has passed
    assert restarted.adoption.adopt() == 0
    world.redis.set("token:APEX_2", make_jwt(world.clock.now + 3_600))  # no status records it
    assert restarted.adoption.adopt() == 0


def test_redis_failure_keeps_the_token_and_retries_the_write(world: World) -> None:
    server = fakeredis.FakeServer()
    server.connected = False  # fakeredis raises ConnectionError while disconnected
    world.refresher.keeper.redis = fakeredis.FakeRedis(server=server, decode_responses=True)
    attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome == "redis"
    assert 1 <= attempt.delay_s <= 2
    world.refresher.keeper.redis = world.redis
    requests = len(world.fake.seen.requests)
    assert world.refresher.refresh("APEX_1").outcome == "kept"
    assert len(world.fake.seen.requests) == requests  # the held token, no new Tradovate call
    token = world.token("APEX_1")
    assert token_state(token, jwt_expiry(token), world.clock.now) == "valid"


@pytest.mark.parametrize("kind", RECOVERABLE_FAULTS)
def test_every_fault_is_a_clear_outcome_and_nothing_is_written(world: World, kind: str) -> None:
    world.fake.inject(LOGIN_PATH, kind)
    attempt = world.refresher.refresh("APEX_1")
    assert attempt.outcome in ("unavailable", "invalid_response")
    assert world.token("APEX_1") is None
    assert world.refresher.refresh("APEX_1").outcome == "login"


def test_logs_carry_the_fields_and_no_secret(world: World) -> None:
    with capture_logs() as logs:
        world.refresher.refresh("APEX_1")
    (event,) = [e for e in logs if e["event"] == "token.refreshed"]
    assert {"login", "outcome", "fingerprint", "expires_at", "ttl", "next_attempt_in"} <= set(event)
    token = world.token("APEX_1") or ""
    password = world.fake.users["APEX_1"].password
    text = repr(logs)
    assert token not in text
    assert password not in text
    assert world.fake.sec not in text


def test_failure_events_name_attempt_and_next_attempt(world: World) -> None:
    world.fake.inject(LOGIN_PATH, "http_500", count=2)
    with capture_logs() as logs:
        world.refresher.refresh("APEX_1")
        world.refresher.refresh("APEX_1")
    failures = [e for e in logs if e["event"] == "token.refresh_failed"]
    assert [e["attempt"] for e in failures] == [1, 2]
    assert all(e["outcome"] == "unavailable" and e["next_attempt_in"] >= 1 for e in failures)
    status = json.loads(world.redis.get("orca:status:APEX_1") or "{}")
    assert status["state"] == "failing"
    assert status["failures"] == 2


def test_metrics_record_expiry_and_success(world: World) -> None:
    world.refresher.refresh("APEX_1")
    expiry = world.metrics.registry.get_sample_value(
        "orca_token_expiry_timestamp_seconds", {"login": "APEX_1"}
    )
    assert expiry == pytest.approx(world.clock.now + LIFETIME_S, abs=1)
    assert world.metrics.registry.get_sample_value(
        "orca_token_last_success_timestamp_seconds", {"login": "APEX_1"}
    ) == pytest.approx(world.clock.now)


def test_refresh_never_raises_on_redis_errors_of_any_kind(world: World) -> None:
    class Exploding(fakeredis.FakeRedis):
        def pipeline(self, *args: object, **kwargs: object) -> redis.client.Pipeline:
            raise redis.ResponseError("OOM command not allowed")

    world.refresher.keeper.redis = Exploding(decode_responses=True)
    assert world.refresher.refresh("APEX_1").outcome == "redis"


def test_the_held_token_is_probed_every_probe_period_without_spending_a_renewal() -> None:
    clock = FakeClock()
    fake = FakeTradovate([user("APEX_1")], token_lifetime_s=LIFETIME_S, clock=clock)
    with tradovate_routes(fake):
        world = build_world(fake, clock, ORCA_TOKEN_PROBE_INTERVAL="300")
        assert world.refresher.refresh("APEX_1").delay_s == pytest.approx(300)
        clock.advance(300)
        assert world.refresher.refresh("APEX_1").outcome == "kept"
        assert fake.seen.renewals["APEX_1"] == 0
        assert world.count("APEX_1", "kept") == 1


def test_a_session_closed_elsewhere_takes_the_token_off_redis_at_once() -> None:
    """A third login elsewhere or a password change closes the session: the next probe is
    refused, every key holding the dead token is deleted and the login logs in again in that
    same refresh; another login is untouched."""
    clock = FakeClock()
    fake = FakeTradovate([user("APEX_1"), user("APEX_2")], token_lifetime_s=LIFETIME_S, clock=clock)
    with tradovate_routes(fake):
        world = build_world(fake, clock, ORCA_TOKEN_PROBE_INTERVAL="300")
        assert world.refresher.refresh("APEX_1").delay_s == pytest.approx(300)
        world.refresher.refresh("APEX_2")
        dead = world.token("APEX_1")
        other = world.token("APEX_2")
        assert dead is not None
        assert fake.close_sessions("APEX_1") == 1
        clock.advance(300)
        with capture_logs() as logs:
            attempt = world.refresher.refresh("APEX_1")
        assert attempt.outcome == "login"
        token = world.token("APEX_1")
        assert token is not None
        assert token != dead
        assert fake.is_live(token)
        for name in ("APEX_1", "APEX_1-ACC1", "APEX_1-ACC2"):
            assert world.redis.get(f"token:{name}") == token
            assert world.redis.get(f"mdtoken:{name}") not in (None, dead)
        assert world.token("APEX_2") == other  # another login is untouched
        refused = next(e for e in logs if e["event"] == "token.refused")
        assert (refused["keys_deleted"], refused["fingerprint"]) == (6, fingerprint(dead))


def test_a_reader_s_401_is_checked_before_anything_is_spent(world: World) -> None:
    world.refresher.refresh("APEX_1")
    assert world.refresher.refresh("APEX_1", verify=True).outcome == "kept"  # alive: nothing spent
    assert world.fake.seen.renewals["APEX_1"] == 0
    world.clock.advance(120)  # older than a minute: a refusal is checked with one renewal
    dead = world.token("APEX_1")
    world.fake.close_sessions("APEX_1")
    assert world.refresher.refresh("APEX_1", verify=True).outcome == "login"
    assert world.token("APEX_1") not in (None, dead)
    assert world.fake.seen.renewals["APEX_1"] == 0


def test_a_grant_s_notes_keep_their_place_and_go_when_no_longer_current() -> None:
    """An unfinished sign-up keeps its place among the other notes while it holds; a password
    note is rewritten from each grant; both go once the grant no longer says them."""
    now = 1_800_000_000.0
    unconfirmed = TokenGrant("t", now + 4_800, now, Outcome.LOGIN, user_status="Initiated")
    expiring = replace(unconfirmed, password_expires_at=now + 86_400, hibp_hint="Compromised")
    first = notes_with(("skipped X",), unconfirmed, now)
    assert first == ("skipped X", "unconfirmed: userStatus Initiated")
    later = notes_with(("unconfirmed: userStatus Initiated", "skipped X"), expiring, now)
    assert later[:2] == ("unconfirmed: userStatus Initiated", "skipped X")
    assert later[2].startswith("password_expiring: expires at ")
    assert later[2].endswith("Tradovate's hint Compromised")
    active = replace(expiring, user_status=None, password_expires_at=None, hibp_hint=None)
    assert notes_with(later, active, now) == ("skipped X",)
