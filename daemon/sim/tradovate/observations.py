"""What the simulator saw, for the tests to judge."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Observations:
    received: int = 0  # requests that arrived, answered or not yet
    sessions_opened: collections.Counter[str] = field(default_factory=collections.Counter)
    renewals: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: list[tuple[str, int]] = field(default_factory=list)
    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (time.monotonic(), path)
    login_bodies: list[dict[str, Any]] = field(default_factory=list)
    penalties: collections.Counter[str] = field(default_factory=collections.Counter)  # by path
    renewal_times: list[float] = field(default_factory=list)  # the simulator's clock
    failed_login_times: list[float] = field(default_factory=list)
    authorizations: collections.Counter[str] = field(default_factory=collections.Counter)
    authorize_headers: list[dict[str, str]] = field(default_factory=list)  # as sent
    device_ids: collections.Counter[tuple[str, str]] = field(  # (name, deviceId) of each login
        default_factory=collections.Counter
    )
    penalty_resends_ok: int = 0  # logins resent with a due p-ticket and accepted
