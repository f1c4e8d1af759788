"""One time scale (`daemon.timescale.TimeScale`): every duration Tradovate sets or advises shrinks
with ORCA_BUDGET_WINDOW alike, down to the few real-second floors the daemon's own machinery
needs; and no other module scales a duration by the window or by 3600 itself."""

from __future__ import annotations

import re
from pathlib import Path

import fakeredis
import pytest

from daemon.metrics import Metrics
from daemon.outcomes import Outcome
from daemon.refresh.build import build_refreshing
from daemon.refresh.schedule import Leads, assumed_lifetime_s
from daemon.service.request_gate import RequestGate
from daemon.sim.tradovate import FakeTradovate
from daemon.store.budget import LOGIN_FAILURE, RENEW
from daemon.timescale import TimeScale
from daemon.tradovate import TradovateClient
from tests.helpers import settings_for, user

ROOT = Path(__file__).parent.parent
# What the daemon needs in real seconds whatever the scale: a reader's clock and round trip
# (the key margin), a scheduler running late (the slack). Measured: with a 1 s floor for the
# slack, 6 s tokens under a loaded `make test` left 18 samples of 300 without a key.
REAL_SECOND_FLOORS = {"key margin": 1.0, "slack": 2.0}


def durations(window_s: int) -> dict[str, float]:
    """Every time-scaled duration, read from a refresher built for `window_s`."""
    fake = FakeTradovate([user("APEX_1")])
    settings = settings_for(fake, ORCA_BUDGET_WINDOW=str(window_s), ORCA_RENEW_LEAD_FLOOR="300")
    refreshing = build_refreshing(
        settings,
        TradovateClient(settings.tradovate),
        fakeredis.FakeRedis(decode_responses=True),
        metrics=Metrics(),
        instance="t",
    )
    refresher, policy = refreshing.refresher, refreshing.refresher.policy
    leads = refresher.schedule.leads
    life = assumed_lifetime_s(window_s)
    margin = leads.key_margin_s(life)

    def park(outcome: Outcome) -> float | None:
        return policy.park_s(outcome, captcha_park_s=refresher.captcha_park_s, logging_in=True)

    found: dict[str, float | None] = {
        "budget window": refresher.budget.window_s,
        "assumed token lifetime": life,
        "renewal advice": leads.renew_before_expiry_s(life),
        "lead floor": leads.lead_floor_s(life),
        "stagger": leads.stagger_s,
        "key margin": margin,
        "slack": Leads(3_600, window_s=window_s, lead_floor_s=0).lead_floor_s(life) - margin,
        "captcha park": park(Outcome.CAPTCHA),
        "429 park": park(Outcome.RATE_LIMITED),
        "TemporaryLocked park": park(Outcome.LOCKED),
        "423 park": park(Outcome.LOCKOUT),
        "rejected ladder, first step": policy.accounts_pause_s(1),
        "rejected ladder, last step": policy.accounts_pause_s(5),
        "renewal block trusted at most": refresher.budget.longest_block_s[RENEW],
        "failed-login block trusted at most": refresher.budget.longest_block_s[LOGIN_FAILURE],
        "restored park at most": refreshing.adoption._longest_park_s,
        "fresh token": refresher.accounts._fresh_token_s,
        "forced refresh cooldown": RequestGate(share=1, window_s=window_s)._cooldown_s,
    }
    assert all(value is not None for value in found.values()), found
    return {name: float(value or 0.0) for name, value in found.items()}


def test_every_duration_shrinks_with_the_budget_window() -> None:
    """Tradovate's hour as 60 s (a simulator's scale): each duration is a 60th of what it is
    in production, or its real-second floor (the slack's is its production value). The
    5-minute trust in a renewal block read from Redis was 5 real minutes on any scale: a
    forged block held renewals for 5 simulated hours."""
    full, small = durations(3_600), durations(60)
    assert full["budget window"] == 3_600
    assert full["renewal block trusted at most"] == 300
    assert full["423 park"] == 3_600
    expected = {
        name: max(value / 60, REAL_SECOND_FLOORS.get(name, 0.0)) for name, value in full.items()
    }
    assert small == pytest.approx(expected)
    shrunk = {name for name in full if small[name] < full[name]}
    assert shrunk == set(full) - {"slack"}, "a duration that does not scale"
    assert durations(7_200)["slack"] == 4.0  # it scales: only its floor is real seconds


def test_a_time_scale_turns_tradovate_seconds_into_the_daemon_s_and_back() -> None:
    scale = TimeScale(60)
    assert scale.of(3_600) == 60
    assert scale.of(60, at_least_s=1.5) == 1.5
    assert scale.on_tradovate(5) == 300
    assert TimeScale().of(900) == 900  # production: the same seconds


# Showing a TTL in hours to a person is no time-scaling.
HOURS_SHOWN = re.compile(r"/ 3600:\.2f\}h")


def test_no_other_module_scales_a_duration_by_the_window_or_by_3600() -> None:
    scaling = re.compile(r"[*/]\s*(BUDGET_WINDOW_S|3_?600(\.0)?)\b|window_s\s*/\s*[A-Z0-9_]")
    found = []
    for path in sorted((ROOT / "daemon").rglob("*.py")):
        if path.name in ("timescale.py", "constants.py") or "sim" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if scaling.search(line) and not HOURS_SHOWN.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
