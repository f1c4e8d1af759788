"""Refresh requests are anyone's to write (`tokens refresh`, a trading program's 401 report, a
loop gone wrong): what one login's requests may cost.

Per login, on this instance's monotonic clock: one request runs at a time, and others for the
same login join it and get its answer; after one ran, another within the cooldown is answered
with what it did instead of running again (a 401 report's check: PROBE_COOLDOWN_S; a forced
refresh: REQUEST_COOLDOWN_S, scaled with the budget window); and forced refreshes that spent a
renewal or a login count against the login's share of the group's renewal budget per window, so
a flood for one login never spends the renewals the others need. A 401 report's check costs no
budget and spends one only when Tradovate refuses the token, so it is not held to the share.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from daemon.constants import PROBE_COOLDOWN_S, REQUEST_COOLDOWN_S
from daemon.timescale import TimeScale


class Admission(Enum):
    RUN = "run"  # the caller runs it, then calls `done`
    JOINED = "joined"  # one for this login runs now: its answer is this request's too
    ANSWERED = "answered"  # coalesced or over the share: `said` is the answer


@dataclass
class _Login:
    waiting: list[str] | None = None  # request ids awaiting the one running (None: none runs)
    last_at: float = float("-inf")  # the last that ran, of either kind
    last_said: str = ""
    forced_at: float = float("-inf")  # the last forced one
    forced_said: str = ""
    spent: deque[float] = field(default_factory=deque)


class RequestGate:
    def __init__(
        self,
        *,
        share: int,
        window_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.share = max(1, share)
        self._window_s = window_s
        self._cooldown_s = TimeScale(window_s).of(REQUEST_COOLDOWN_S)
        self._monotonic = monotonic
        self._logins: dict[str, _Login] = {}
        self._mutex = threading.Lock()

    def admit(
        self, login: str, request_id: str, *, forced: bool, join: bool = True
    ) -> tuple[Admission, str]:
        """Whether a request for `login` runs now; `join` False: one that cannot wait for
        another's answer (a request for every login) is answered "in progress" instead."""
        now = self._monotonic()
        with self._mutex:
            state = self._logins.setdefault(login, _Login())
            if state.waiting is not None:
                if not join:
                    return Admission.ANSWERED, "coalesced: a refresh of it is in progress"
                state.waiting.append(request_id)
                return Admission.JOINED, ""
            if forced and now - state.forced_at < self._cooldown_s:
                ago = now - state.forced_at
                return Admission.ANSWERED, f"coalesced: {state.forced_said} {ago:.0f} s ago"
            if not forced and now - state.last_at < PROBE_COOLDOWN_S:
                ago = now - state.last_at
                return Admission.ANSWERED, f"coalesced: {state.last_said} {ago:.0f} s ago"
            while state.spent and now - state.spent[0] >= self._window_s:
                state.spent.popleft()
            if forced and len(state.spent) >= self.share:
                free_in = self._window_s - (now - state.spent[0])
                return Admission.ANSWERED, (
                    f"deferred: its {self.share} requested refreshes per window are spent, "
                    f"again in {free_in:.0f} s (its schedule still renews it)"
                )
            state.waiting = [request_id]
            return Admission.RUN, ""

    def done(self, login: str, said: str, *, forced: bool, spent: bool) -> list[str]:
        """The one running ended: the ids of every request it answers."""
        now = self._monotonic()
        with self._mutex:
            state = self._logins.setdefault(login, _Login())
            waiting, state.waiting = state.waiting or [], None
            state.last_at, state.last_said = now, said
            if forced:
                state.forced_at, state.forced_said = now, said
            if spent:
                state.spent.append(now)
            return waiting

    def running(self) -> int:
        with self._mutex:
            return sum(1 for state in self._logins.values() if state.waiting is not None)
