"""The daemon's time: epoch seconds that a step of the system clock does not move.

Token expiries, budget windows, back-offs and parks are kept in epoch seconds, so a system clock
stepped 2 hours forward would make every token look dead (a login, a new session, for each) and
empty every budget window, and one stepped 10 minutes back would hold every window full and the
scheduler still for those minutes. `SteadyClock` reads the system clock once, at start, and from
then on moves with the monotonic clock (which NTP slews but never steps). `step()` notices when
the system clock has moved away from it: the step is logged (`clock.stepped`) and re-anchored, so
it is said once, and the scheduler's next runs are moved by it (`JobRunner.shift`). The daemon
keeps its own time until it restarts; `doctor` compares the system clock with Tradovate's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from daemon.constants import CLOCK_STEP_S

log = structlog.get_logger("daemon.clock")


class SteadyClock:
    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()  # what it returns: monotonic + this
        self._anchor = self._offset  # the system clock's offset when last compared

    def __call__(self) -> float:
        return self._monotonic() + self._offset

    def step(self) -> float:
        """How far the system clock stepped since the last step noticed (0.0: within
        CLOCK_STEP_S); a step is logged once and becomes the new anchor."""
        offset = self._wall() - self._monotonic()
        step_s = offset - self._anchor
        if abs(step_s) <= CLOCK_STEP_S:
            return 0.0
        self._anchor = offset
        log.warning(
            "clock.stepped",
            step_s=round(step_s, 3),
            behind_system_clock_s=round(offset - self._offset, 3),
            hint="the daemon keeps its own time (token expiries, budget windows, back-offs "
            "stay as measured) and moves its scheduled runs by the step; restart it at a quiet "
            "moment if the system clock was wrong before",
        )
        return step_s
