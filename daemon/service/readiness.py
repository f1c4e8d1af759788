"""What `/healthz` and `/readyz` answer (their JSON is read by supervisors: never rename)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from daemon.outcomes import LoginState, TokenState
from daemon.refresh.keeper import login_state
from daemon.service.components import Components
from daemon.store.tokens import fingerprint, login_tokens
from daemon.token_format import iso


class Readiness:
    def __init__(self, components: Components, scheduler_alive: Callable[[], bool]) -> None:
        self._c = components
        self._scheduler_alive = scheduler_alive

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        alive = self._scheduler_alive()
        return alive, {
            "status": "ok" if alive else "scheduler not running",
            "instance": self._c.instance,
            "redis": self._c.redis_health.describe(),
            "leader": bool(self._c.owned()),
        }

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        """Ready when Redis answers, this instance knows which logins are its own (or stands
        by while the logins have valid tokens: someone refreshes them), and every one it owns
        has a valid token in Redis (judged by the expiry recorded with it) or is deliberately
        parked."""
        c = self._c
        now = c.clock()
        names = sorted(c.owned())
        found: dict[str, tuple[str | None, TokenState]] = {}
        redis_up = c.redis_health.up
        if redis_up:
            try:
                found = login_tokens(c.redis, names, now)
            except redis.RedisError as error:
                c.redis_health.failed(error)
                redis_up = False
        ownership = c.ownership
        standing_by = ownership.standby is not None
        unrefreshed = ownership.unheld if standing_by else None
        ready = bool(redis_up) and (ownership.settled or (standing_by and unrefreshed == 0))
        logins = {}
        for name in names:
            token, token_word = found.get(name, (None, TokenState.UNKNOWN))
            progress = c.refresher.states[name]
            state = login_state(progress, now)
            ready = ready and (token_word.usable or state is LoginState.PARKED)
            logins[name] = {
                "token": token_word,
                "fingerprint": fingerprint(token) if token else None,
                "state": state,
                "last_error": progress.last_error,
                "next_attempt_at": iso(progress.next_attempt_at),
            }
        return ready, {
            "ready": ready,
            "redis": c.redis_health.describe(),
            "leader": bool(names),
            "standby": ownership.standby,
            **({"unrefreshed": unrefreshed} if standing_by else {}),
            "logins": logins,
        }
