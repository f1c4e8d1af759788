"""Pacing of accesstokenrequest calls for every login of this address together."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

from daemon.constants import AUTH_RATE_WINDOW_S


class AuthPacer:
    """Paces accesstokenrequest calls of all logins together under `limit` per minute.

    `reserve()` hands out start times in order, so callers queue fairly instead of racing when a
    slot frees. A 429 is Tradovate's per-user limit: it parks that login, not this pacer.
    """

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._starts: collections.deque[float] = collections.deque(maxlen=limit)
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Seconds to wait before sending; the slot is held for the caller from now on."""
        with self._lock:
            now = self._clock()
            start = now
            if len(self._starts) == self._limit:
                start = max(start, self._starts[0] + AUTH_RATE_WINDOW_S)
            self._starts.append(start)
            return start - now
