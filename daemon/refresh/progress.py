"""What the refresher holds and knows of each login between attempts: the only mutable state of
a refresh. The policy reads it; the refresher changes it, under the login's lock."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from daemon.config import Login
from daemon.constants import PASSWORD_WARNING_S
from daemon.logs import fingerprint
from daemon.outcomes import LoginState, Outcome
from daemon.store.status import LoginStatus
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
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        return self.login.name

    def holds_valid_token(self, now: float) -> bool:
        return self.grant is not None and self.grant.expires_at > now

    def state(self, now: float) -> LoginState:
        if self.parked_until > now or (self.lapsed_for_budget and not self.holds_valid_token(now)):
            return LoginState.PARKED
        if self.failures:
            return LoginState.FAILING
        return LoginState.OK if self.holds_valid_token(now) else LoginState.PENDING

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


class AuthDeferred(Exception):
    """Not yet: a pacing slot, a budget slot or a penalty's wait is due in `wait_s`."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s


def login_status(
    state: LoginProgress, now: float, accounts: tuple[str, ...], instance: str
) -> LoginStatus:
    """The status record `orca:status:{login}` holds for this progress."""
    grant = state.grant
    parked = state.parked_until > now
    return LoginStatus(
        login=state.name,
        state=state.state(now),
        fingerprint=fingerprint(grant.access_token) if grant else None,
        expires_at=iso(grant.expires_at) if grant else None,
        issued_at=iso(grant.issued_at) if grant else None,
        notes=state.notes,
        when_budget_short=state.login.when_budget_short,
        route=state.login.route,
        source=grant.source if grant else None,
        accounts=accounts,
        failures=state.failures,
        last_outcome=state.last_outcome,
        last_error=state.last_error,
        last_success_at=iso(state.last_success_at),
        next_attempt_at=iso(state.next_attempt_at),
        updated_at=iso(now),
        instance=instance,
        parked_until=iso(state.parked_until) if parked else None,
        park_reason=state.park_reason if parked else None,
        credential=credential(state) if state.last_outcome is Outcome.CLOSED else None,
    )


def credential(state: LoginProgress) -> str | None:
    """A digest telling whether the login's password changed since it was Closed."""
    password = state.login.password
    return None if password is None else password.digest(f"orca-token-daemon:{state.name}")


def password_news(grant: TokenGrant, now: float) -> tuple[float | None, str | None]:
    """What a grant says of the password: when it expires, if within a week, and Tradovate's
    `hibpHint` (None, None: nothing to say)."""
    expires_at = grant.password_expires_at
    expiring = expires_at is not None and expires_at - now <= PASSWORD_WARNING_S
    return (expires_at if expiring else None, grant.hibp_hint or None)


def password_note(news: tuple[float | None, str | None]) -> str:
    expires_at, hint = news
    said = (
        f"expires at {iso(expires_at)}" if expires_at is not None else "",
        f"Tradovate's hint {hint}" if hint else "",
    )
    return f"{Outcome.PASSWORD_EXPIRING}: " + "; ".join(part for part in said if part)


def notes_with(notes: tuple[str, ...], grant: TokenGrant, now: float) -> tuple[str, ...]:
    """The login's notes once it holds `grant`: an unfinished sign-up (userStatus) and a
    password expiring within a week or a `hibpHint`, each as this grant says; one that no
    longer holds goes, the others stay."""
    unconfirmed = None
    if grant.user_status is not None:
        unconfirmed = f"{Outcome.UNCONFIRMED}: userStatus {grant.user_status}"
    kept = tuple(  # a note still current keeps its place
        note
        for note in notes
        if not note.startswith(str(Outcome.PASSWORD_EXPIRING))
        and (not note.startswith(str(Outcome.UNCONFIRMED)) or note == unconfirmed)
    )
    if unconfirmed is not None and unconfirmed not in kept:
        kept += (unconfirmed,)
    news = password_news(grant, now)
    return kept if news == (None, None) else (*kept, password_note(news))
