"""What the refresher holds and knows of each login between attempts: the only mutable state of
a refresh. The policy reads it; the refresher changes it, under the login's lock."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from daemon.config import Login
from daemon.outcomes import Outcome
from daemon.token_format import iso
from daemon.tradovate import TokenGrant


@dataclass(frozen=True)
class Attempt:
    """What one refresh attempt did, and when the next one is due."""

    outcome: Outcome
    delay_s: float
    until: float | None = None  # a wait nobody may shorten ends then (a park, a stop)
    reason: Outcome | None = None  # ... and why

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    @property
    def deferred(self) -> bool:
        return self.outcome.deferred

    def described(self) -> str:
        """The outcome word, and for a wait nobody shortens, why and until when (`tokens
        refresh NAME`'s answer): `parked (locked) until 2026-12-02T03:00:00+00:00`."""
        if self.until is None or self.outcome.ok:
            return str(self.outcome)
        why = f" ({self.reason})" if self.reason is not None and self.reason != self.outcome else ""
        when = "an operator acts" if math.isinf(self.until) else iso(self.until)
        return f"{self.outcome}{why} until {when}"


@dataclass
class LoginProgress:
    """What the refresher holds and knows of one login between attempts."""

    login: Login
    grant: TokenGrant | None = None
    # When to renew by Tradovate's advice, jittered; the group's schedule
    # (`daemon.refresh.schedule`) may plan it later while renewals are short.
    advised_renew_at: float = 0.0
    accounts: tuple[str, ...] = ()
    accounts_fetched_at: float | None = None
    failures: int = 0
    last_outcome: Outcome | None = None
    last_error: str | None = None
    last_success_at: float | None = None
    next_attempt_at: float | None = None
    # A wait nobody may shorten, an operator neither: a captcha, TemporaryLocked, a 423, a 429.
    parked_until: float = 0.0
    park_reason: Outcome | None = None
    p_ticket: str | None = None
    auth_slot_at: float | None = None  # a start time reserved with the AuthPacer
    notes: tuple[str, ...] = ()  # said once in the log, kept in the status (skipped names)
    written_names: tuple[str, ...] = ()  # the names its last write covered
    written_token: str | None = None  # ... with this token
    session_unused: bool = False  # a login was sent and nothing usable came of it yet
    # The rejected-password ladder (a wrong password, Closed (forever), Unconfirmed, 400, 404),
    # kept across restarts; an operator's `tokens refresh NAME` may try once at once.
    not_before: float = 0.0
    accounts_paused_until: float = 0.0  # /account/list is not asked (denied, captcha)
    accounts_denials: int = 0
    unmoved_renewals: int = 0  # renewals in a row whose expirationTime did not move
    lapsed_for_budget: bool = False  # a `wait` login whose token ran out for want of renewals
    # The account list refused a token older than a minute: one renewal tells a closed session
    # (refused too: the keys go, the login logs in) from a permission problem.
    confirm_by_renewal: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    name: str = field(init=False)  # the login's; a field, read on every path, never a call

    def __post_init__(self) -> None:
        self.name = self.login.name

    def holds_valid_token(self, now: float) -> bool:
        return self.grant is not None and self.grant.expires_at > now

    def wait_ends(self, now: float) -> tuple[float, Outcome | None]:
        """When the wait before the next attempt ends, and why: a park's reason, or the
        outcome that set the rejected ladder's back-off."""
        reason = self.park_reason if self.parked_until > now else self.last_outcome
        return max(self.parked_until, self.not_before), reason

    def add_note(self, note: str) -> bool:
        """Add a note to the login's status; True the first time (warn once, not per write)."""
        if note in self.notes:
            return False
        self.notes = (*self.notes, note)
        return True

    def drop_notes(self, prefix: str) -> bool:
        """Drop the notes starting with `prefix`; True when there was one."""
        kept = tuple(note for note in self.notes if not note.startswith(prefix))
        dropped, self.notes = kept != self.notes, kept
        return dropped


LOGIN_DEFERRED = "budget.login_deferred"  # the group's failed-login budget holds a login


class AuthDeferred(Exception):
    """Not yet: a pacing slot, a budget slot or a penalty's wait is due in `wait_s`; `event`
    is what the log says of it (`auth.deferred`: debug)."""

    def __init__(self, wait_s: float, event: str = "auth.deferred") -> None:
        self.wait_s = wait_s
        self.event = event


def credential(state: LoginProgress) -> str | None:
    """A digest telling whether the login's password changed since it was Closed."""
    password = state.login.password
    return None if password is None else password.digest(f"orca-token-daemon:{state.name}")
