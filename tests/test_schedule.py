"""The group's renewal schedule (`daemon.refresh.schedule`): pure, on an injected clock."""

from __future__ import annotations

import itertools
import random
import threading
from typing import Any

import pytest

from daemon.config import Login, Secret
from daemon.outcomes import Outcome
from daemon.refresh import schedule as schedule_module
from daemon.refresh.progress import LoginProgress
from daemon.refresh.schedule import Leads, RenewalPlan, RenewalSchedule, plan_renewals
from daemon.tradovate import TokenGrant

NOW = 1_800_000_000.0
LIFE_S = 4_800.0
HOUR_S = 3_600.0


def logins(count: int, *, relogin: int = 0, held_at: float | None = NOW) -> list[LoginProgress]:
    """`count` logins in configuration order, the first `relogin` of them `relogin`, each
    holding a token issued `held_at` (None: none yet)."""
    found = []
    for n in range(count):
        state = LoginProgress(Login(f"L{n:02}", Secret("pw"), "relogin" if n < relogin else "wait"))
        if held_at is not None:
            state.grant = TokenGrant(f"t{n}", held_at + LIFE_S + n, held_at + n, Outcome.LOGIN)
            state.advised_renew_at = held_at + LIFE_S + n - 900
        found.append(state)
    return found


def plan(
    states: list[LoginProgress],
    *,
    usable: int = 14,
    floor_s: float = 300,
    spent: tuple[float, ...] = (),
) -> RenewalPlan:
    leads = Leads(3_600, random.Random(1), window_s=HOUR_S, lead_floor_s=floor_s)
    return plan_renewals(
        states, NOW, lifetime_s=LIFE_S, usable=usable, share=1.0, leads=leads, spent=spent
    )


def most_in_one_window(times: list[float]) -> int:
    """The most of `times` any budget window (an hour, open at its start) holds."""
    ordered = sorted(times)
    return max(sum(1 for t in ordered if end - HOUR_S < t <= end) for end in ordered)


def test_while_renewals_fit_the_advice_is_kept() -> None:
    states = logins(14)
    for n, state in enumerate(states):  # advised a minute apart
        state.advised_renew_at -= n * 60
    found = plan(states)
    assert not found.short
    assert found.lead_s == 900
    assert found.beyond == ()
    assert found.renew_at == {s.name: s.advised_renew_at for s in states}
    assert (found.keeps_alive, found.keeps_alive_at_floor) == (15, 17)


def test_15_tokens_issued_together_are_paced_though_the_hour_fits_them() -> None:
    """15 renewals an 80-minute life fit 14 an hour, but not at the advice of 15 tokens
    issued within a minute: the 15th would wait an hour for a slot and lapse."""
    states = logins(15)
    found = plan(states)
    assert not found.short  # the desk fits its address: nothing to add
    assert found.beyond == ()
    assert most_in_one_window(list(found.renew_at.values())) <= 14
    for state in states:
        assert state.grant is not None
        assert NOW <= found.renew_at[state.name] <= state.grant.expires_at - found.floor_s


def test_the_plan_starts_from_the_spends_the_window_holds_whoever_made_them() -> None:
    """An instance spent its group's 14 renewals 10 minutes ago on logins that have moved
    to other groups since: the window holds those spends until 15 minutes before its own 17
    tokens reach their floor. Its plan renews 14 of them in that room; the last 3 in
    configuration order are beyond at once, not found lapsing when their turn comes."""
    states = logins(17, held_at=NOW - 600)
    spent = tuple(NOW - 600 + n / 10 for n in range(14))
    fresh, found = plan(states), plan(states, spent=spent)
    assert fresh.beyond == ()
    assert found.beyond == ("L14", "L15", "L16")
    kept = [found.renew_at[s.name] for s in states if s.name not in found.beyond]
    assert most_in_one_window([*spent, *kept]) <= 14
    for state in states:
        if state.name not in found.beyond:
            assert state.grant is not None
            assert found.renew_at[state.name] <= state.grant.expires_at - found.floor_s
    assert plan(states, spent=tuple(at - HOUR_S for at in spent)).beyond == ()  # gone by


def test_a_token_past_its_floor_still_renews_at_once_where_a_slot_is_free() -> None:
    states = logins(3, held_at=NOW - LIFE_S + 100)  # 100 s left, the floor 300 s
    found = plan(states)
    assert found.beyond == ()
    assert all(at == pytest.approx(NOW, abs=5) for at in found.renew_at.values())


def test_20_logins_move_later_just_enough_for_17_and_the_last_3_are_beyond() -> None:
    states = logins(20)
    found = plan(states)
    assert found.short
    assert found.beyond == ("L17", "L18", "L19")
    assert 300 <= found.lead_s < 900
    assert (found.keeps_alive, found.keeps_alive_at_floor) == (17, 17)
    kept = sorted(found.renew_at[s.name] for s in states[:17])
    gaps = [later - earlier for earlier, later in itertools.pairwise(kept)]
    assert min(gaps) >= HOUR_S / 14  # paced: never more than 14 in any hour
    for state in states[:17]:
        assert state.grant is not None
        assert found.renew_at[state.name] <= state.grant.expires_at - found.lead_s
        assert found.renew_at[state.name] >= NOW  # tokens issued together: spread from now on


def test_16_logins_need_a_lead_between_the_floor_and_the_advice_and_none_is_beyond() -> None:
    found = plan(logins(16))
    assert found.short
    assert found.beyond == ()
    assert 300 < found.lead_s < 900
    assert found.keeps_alive >= 16


def test_relogin_logins_are_beyond_first_then_the_last_in_configuration_order() -> None:
    assert plan(logins(20, relogin=2)).beyond == ("L00", "L01", "L19")
    assert plan(logins(20, relogin=5)).beyond == ("L02", "L03", "L04")


def test_a_parked_login_leaves_its_place_to_another() -> None:
    states = logins(18)
    states[0].grant = None
    states[0].parked_until = NOW + 3_600  # TemporaryLocked: it cannot hold a token for an hour
    assert plan(states).beyond == ()
    states[0].parked_until = 0
    assert plan(states).beyond == ("L17",)


def test_below_the_floor_nothing_more_is_kept() -> None:
    assert plan(logins(40)).keeps_alive == 17
    assert len(plan(logins(40)).beyond) == 23
    assert plan(logins(40), floor_s=900).keeps_alive == 15  # a floor at the advice: as before


def test_logins_without_a_token_yet_are_given_the_last_places() -> None:
    states = logins(20, held_at=None)
    states[0].grant = TokenGrant("t0", NOW + LIFE_S, NOW, Outcome.LOGIN)
    found = plan(states)
    assert found.renew_at["L00"] == pytest.approx(
        NOW + LIFE_S - found.lead_s - 16 * (HOUR_S / 14 + 2), abs=1
    )


def test_an_instance_plans_its_share_of_the_groups_budget() -> None:
    """Two instances of one group, 10 logins each of 20: each keeps its half of 17."""
    states = logins(10)
    schedule = RenewalSchedule({s.name: s for s in states}, Leads(3_600), 14)
    schedule.group_logins = 20  # told by the membership round
    found = schedule.replan(NOW)
    assert found.beyond == ("L08", "L09")
    assert schedule.latest is found
    assert all(schedule.renew_at(s) == found.renew_at[s.name] for s in states[:8])


def test_the_floor_scales_with_the_budget_window_and_stays_before_the_key_expires() -> None:
    leads = Leads(3_600, window_s=60, lead_floor_s=300)
    assert leads.lead_floor_s(80) == pytest.approx(5)
    assert leads.key_margin_s(80) == pytest.approx(1)
    assert leads.renew_before_expiry_s(80) == pytest.approx(15)
    tight = Leads(3_600, window_s=60, lead_floor_s=120)
    # key margin 1 s, and 2 s of slack: a scheduler runs late in real seconds on any scale
    assert tight.lead_floor_s(80) == pytest.approx(3)
    assert Leads(3_600, lead_floor_s=120).lead_floor_s(4_800) == pytest.approx(120)


def test_two_logins_jobs_racing_lose_no_update_of_the_groups_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two logins' jobs on threads, each changing only its own progress under its own lock,
    then replanning. A's plan is made from a view taken before B's new token and held there
    until B's job is done, or half a second. The plan left at the end is made from both
    logins' last tokens: B's update is not lost to A's older plan."""
    states = logins(20)  # short: every login's renewal time depends on the others' tokens
    schedule = RenewalSchedule({s.name: s for s in states}, Leads(3_600), 14)
    a, b = states[0], states[1]
    a_planning, b_done = threading.Event(), threading.Event()
    plan_from = schedule_module.plan_renewals

    def a_slow(logins: list[LoginProgress], now: float, **options: Any) -> RenewalPlan:
        made = plan_from(logins, now, **options)
        if threading.current_thread().name == "job-a":
            a_planning.set()
            b_done.wait(timeout=0.5)
        return made

    monkeypatch.setattr(schedule_module, "plan_renewals", a_slow)

    def job_a() -> None:
        with a.lock:
            schedule.replan(NOW)

    def job_b() -> None:
        assert a_planning.wait(timeout=5)
        with b.lock:
            b.grant = TokenGrant("b-renewed", NOW + 600 + LIFE_S, NOW + 600, Outcome.RENEW)
            b.advised_renew_at = NOW + 600 + LIFE_S - 900
            schedule.replan(NOW + 600)
        b_done.set()

    threads = [threading.Thread(target=job_a, name="job-a"), threading.Thread(target=job_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    monkeypatch.setattr(schedule_module, "plan_renewals", plan_from)
    settled = schedule.plan(NOW + 600)
    assert schedule.renew_at(b) == settled.renew_at[b.name]
    assert {s.name: schedule.renew_at(s) for s in states} == settled.renew_at
