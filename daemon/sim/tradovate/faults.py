"""Faults to inject per endpoint: every kind of answer one can replace a real one with."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from daemon.sim.tradovate.tokens import b64

# Faults a retry recovers from with the same session: the daemon must ride them out.
RECOVERABLE_FAULTS = (
    "http_500",
    "http_503",
    "html",
    "not_json",
    "no_token",
    "empty_token",
    "malformed_token",
    "expired_token",
    "reset",
    "hang",
)
# Every kind of answer a fault can replace a real one with (partner docs, "Error Handling":
# 400 malformed, 401/403 permissions, 404 unknown endpoint, 423 about to be locked out, 429 the
# user's limit with an empty body).
FAULT_KINDS = (
    *RECOVERABLE_FAULTS,
    "http_400",
    "http_401",
    "http_403",
    "http_404",
    "http_423",
    "http_429",
    "error_text",
    "penalty",
    "captcha",
    "drip",
)


@dataclass
class Fault:
    kind: str
    count: int = 1
    p_time_s: float = 1.0  # penalty
    hang_s: float = 30.0  # hang; drip: seconds between two bytes
    user: str | None = None  # only requests of this login; None: anyone's


@dataclass(frozen=True)
class Hang:
    """Answer nothing for this long (a client times out first)."""

    seconds: float


class Reset:
    """Drop the connection without an answer."""


@dataclass(frozen=True)
class Drip:
    """Send this JSON body one byte every `every_s` (an overall deadline must end it)."""

    body: bytes
    every_s: float


def fault_answer(fault: Fault) -> tuple[int, Any]:
    expired_claims = b64({"exp": 1_000_000_000})
    answers: dict[str, tuple[int, Any]] = {
        "http_500": (500, {"errorText": "Internal Server Error"}),
        "http_503": (503, b"<html><body>Service Unavailable</body></html>"),
        "http_400": (400, {"errorText": "Bad Request"}),
        "http_401": (401, {"errorText": "Access is denied"}),
        "http_403": (403, {"errorText": "Forbidden"}),
        "http_404": (404, b""),
        "http_423": (423, {"errorText": "You are about to be locked out"}),
        "http_429": (429, b""),  # Tradovate's 429 has an empty body
        "html": (200, b"<html><body>Maintenance</body></html>"),
        "not_json": (200, b"{not json"),
        "no_token": (200, {"userStatus": "Active"}),
        "empty_token": (200, {"accessToken": "", "expirationTime": "2030-01-01T00:00:00Z"}),
        "malformed_token": (200, {"accessToken": "abc.def", "expirationTime": None}),
        "expired_token": (200, {"accessToken": f"eyJhbGciOiJub25lIn0.{expired_claims}.sig"}),
        "error_text": (200, {"errorText": "Incorrect username or password."}),
        "captcha": (200, {"p-ticket": "captcha-ticket", "p-time": 0, "p-captcha": True}),
        "reset": (0, Reset()),
        "hang": (0, Hang(fault.hang_s)),
        "drip": (200, Drip(b'{"errorText": "' + b"." * 200 + b'"}', fault.hang_s)),
    }
    return answers[fault.kind]


class FaultQueue:
    """Faults waiting per endpoint, each for `count` requests (of one user, when given)."""

    def __init__(self) -> None:
        self._faults: dict[str, collections.deque[Fault]] = collections.defaultdict(
            collections.deque
        )

    def add(self, path: str, fault: Fault) -> None:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}; one of {', '.join(FAULT_KINDS)}")
        self._faults[path].append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def take(self, path: str, user: str | None) -> Fault | None:
        queue = self._faults.get(path)
        fault = next((f for f in queue or () if f.user in (None, user)), None)
        if queue is None or fault is None:
            return None
        fault.count -= 1
        if fault.count <= 0:
            queue.remove(fault)
        return fault
