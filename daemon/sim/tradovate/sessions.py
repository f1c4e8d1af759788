"""Tradovate's sessions as the simulator keeps them: each login opens one, a user keeps the newest
`max_per_user` (one more closes the oldest: Tradovate logs the trader out of their own platform),
and a token is live while it is genuine, unexpired and its session still open."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from daemon.sim.tradovate.tokens import TokenMint


@dataclass
class Session:
    id: int
    user: str
    opened_at: float
    open: bool = True


class Sessions:
    def __init__(self, mint: TokenMint, max_per_user: int) -> None:
        self._mint = mint
        self._max_per_user = max_per_user
        self._sessions: dict[int, Session] = {}
        self._ids = itertools.count(1)

    def open(self, user: str, now: float) -> Session:
        session = Session(next(self._ids), user, now)
        self._sessions[session.id] = session
        newest_first = sorted(self._open_of(user), key=lambda s: (s.opened_at, s.id), reverse=True)
        for oldest in newest_first[self._max_per_user :]:
            oldest.open = False
        return session

    def count_open(self, user: str) -> int:
        return len(self._open_of(user))

    def close_all(self, user: str) -> int:
        closing = self._open_of(user)
        for session in closing:
            session.open = False
        return len(closing)

    def issue(self, session: Session, purpose: str, lifetime_s: float) -> tuple[str, float]:
        return self._mint.issue(session.user, session.id, purpose, lifetime_s)

    def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this simulator issued, None for anything else."""
        return self._mint.verify(token)

    def live(self, token: str) -> Session | None:
        """The token's session, while Tradovate would accept the token."""
        claims = self._mint.verify(token)
        session = self._sessions.get(claims.get("sid", -1)) if claims else None
        return session if session is not None and session.open else None

    def _open_of(self, user: str) -> list[Session]:
        return [s for s in self._sessions.values() if s.user == user and s.open]
