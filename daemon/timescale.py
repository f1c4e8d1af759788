"""Tradovate's clock against the daemon's. Every duration Tradovate sets or advises (its rolling
hour, the renewal advice and its floor, the stagger, a key's margin, penalty waits, parks, how
long a block read from Redis is trusted, a renewal's slack) is written in Tradovate's seconds in
`daemon.constants` or a setting; `TimeScale` is the one place that turns it into the seconds the
daemon runs on. In production the two are the same (ORCA_BUDGET_WINDOW=3600); a simulator's
shorter hour shrinks every one of them alike, so the daemon behaves the same, only faster."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.constants import (
    BUDGET_WINDOW_S,
    TOKEN_TTL_MARGIN_FRACTION,
    TOKEN_TTL_MARGIN_MIN_S,
    TOKEN_TTL_MARGIN_S,
)


@dataclass(frozen=True)
class TimeScale:
    window_s: float = BUDGET_WINDOW_S  # Tradovate's rolling hour, on the daemon's clock

    @property
    def factor(self) -> float:
        return self.window_s / BUDGET_WINDOW_S

    def of(self, tradovate_s: float, *, at_least_s: float = 0.0) -> float:
        """`tradovate_s` on the daemon's clock, never under `at_least_s`: what the daemon's
        own machinery needs in real seconds whatever the scale (a scheduler's lateness)."""
        return max(tradovate_s * self.factor, at_least_s)

    def on_tradovate(self, scaled_s: float) -> float:
        """Back on Tradovate's clock: how a duration is shown to a person."""
        return scaled_s / self.factor


def key_margin_s(lifetime_s: float, window_s: float = BUDGET_WINDOW_S) -> float:
    """How long before its token dies a key expires: 60 s on the budget window's time-scale
    (never under a second: readers' clocks and round trips do not shrink with it), or a tenth
    of a shorter life."""
    scaled = TimeScale(window_s).of(TOKEN_TTL_MARGIN_S, at_least_s=TOKEN_TTL_MARGIN_MIN_S)
    return min(scaled, max(lifetime_s, 0.0) * TOKEN_TTL_MARGIN_FRACTION)
