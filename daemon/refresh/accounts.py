"""The account-list check of one login's held token: asks Tradovate for the list and keeps what
it learns (the names, a pause while a live token may not list). It decides nothing about the
token itself: an older token's refusal goes back to the refresher, where one renewal decides."""

from __future__ import annotations

from daemon.outcomes import Outcome
from daemon.refresh.names import AccountNames
from daemon.refresh.policy import Policy
from daemon.refresh.progress import LoginProgress
from daemon.refresh.reporter import Reporter
from daemon.tradovate import (
    AccountsDenied,
    CaptchaRequired,
    Stopped,
    TradovateClient,
    TradovateError,
)

ACCOUNTS_NOTE = "accounts not listed: API key scope or device id"


class AccountsCheck:
    def __init__(
        self,
        tradovate: TradovateClient,
        names: AccountNames,
        policy: Policy,
        reporter: Reporter,
        *,
        captcha_park_s: float,
        fresh_token_s: float,
    ) -> None:
        self._tradovate = tradovate
        self._names = names
        self._policy = policy
        self._reporter = reporter
        self._captcha_park_s = captcha_park_s
        self._fresh_token_s = fresh_token_s

    def due(self, state: LoginProgress, now: float, *, new_token: bool) -> bool:
        """With every new token and every check period, unless the checks are paused."""
        paused = state.accounts_paused_until > now
        return (new_token and not paused) or self._policy.account_check_due(state, now)

    def check(self, state: LoginProgress, now: float) -> TradovateError | None:
        """List the accounts with the held token. Returns the fault that leaves the names as
        they were (the token is still written under them). Raises AccountsDenied for a token
        older than `fresh_token_s`: only a renewal tells a closed session from a permission
        problem. A fresh token refused, or a captcha, pauses the checks instead."""
        assert state.grant is not None
        try:
            accounts = self._tradovate.list_accounts(state.grant.access_token)
        except AccountsDenied as denied:
            if now - state.grant.issued_at >= self._fresh_token_s:
                state.accounts_fetched_at = now
                raise
            self._pause(state, denied, now, Outcome.ACCOUNTS_DENIED)
        except CaptchaRequired as captcha:
            self._pause(state, captcha, now, Outcome.CAPTCHA)
        except Stopped:  # a stop began: the token in hand is written under the names known
            return None
        except TradovateError as error:
            return error
        else:
            state.accounts = self._names.sane(state, [a.name for a in accounts])
            state.accounts_fetched_at = now
            state.accounts_denials = 0
            if state.drop_notes(ACCOUNTS_NOTE):
                self._reporter.accounts_allowed(state.name)
        return None

    def _pause(self, state: LoginProgress, error: TradovateError, now: float, why: Outcome) -> None:
        """A live token that may not list accounts: kept, written and renewed on schedule;
        the list is asked again after the ladder's wait (a captcha's: its park)."""
        state.accounts_denials += 1
        if why is Outcome.CAPTCHA:
            pause_s = self._captcha_park_s
        else:
            pause_s = self._policy.accounts_pause_s(state.accounts_denials)
        state.accounts_paused_until = now + pause_s
        state.drop_notes(ACCOUNTS_NOTE)
        state.add_note(f"{ACCOUNTS_NOTE} ({why}: {error}), asked again in {pause_s:.0f} s")
        self._reporter.accounts_denied(state, error, why, pause_s)
