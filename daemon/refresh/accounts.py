"""The account-list check of one login's token: asks Tradovate for the list and says what the
answer means, as data the refresher's settle step applies. It changes no progress and decides
nothing about the token itself: an older token's refusal asks for one renewal to decide."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.outcomes import Outcome
from daemon.tradovate import (
    AccountsDenied,
    CaptchaRequired,
    Stopped,
    TokenGrant,
    TradovateClient,
    TradovateError,
)
from daemon.values import SAFE_NAME


@dataclass(frozen=True)
class Listing:
    """What /account/list answered for a token. At most one of `names`, `paused`, `confirm`
    and `fault` is set; none: a stop began, the names stay as they were."""

    names: tuple[str, ...] | None = None  # the accounts whose names a key may carry
    refused: tuple[str, ...] = ()  # names refused: not safe in a key
    paused: TradovateError | None = None  # a live token may not list (or a captcha): pause
    paused_why: Outcome | None = None
    confirm: AccountsDenied | None = None  # an older token refused: one renewal decides
    fault: TradovateError | None = None  # the list could not be had: the names stay


class AccountsCheck:
    def __init__(self, tradovate: TradovateClient, *, fresh_token_s: float) -> None:
        self._tradovate = tradovate
        self._fresh_token_s = fresh_token_s

    def check(self, grant: TokenGrant, now: float) -> Listing:
        """List the accounts with `grant`'s token. A refusal of a token older than
        `fresh_token_s` asks for a renewal to decide (only it tells a closed session from a
        permission problem); a fresh token refused, or a captcha, pauses the checks."""
        try:
            accounts = self._tradovate.list_accounts(grant.access_token)
        except AccountsDenied as denied:
            if now - grant.issued_at >= self._fresh_token_s:
                return Listing(confirm=denied)
            return Listing(paused=denied, paused_why=Outcome.ACCOUNTS_DENIED)
        except CaptchaRequired as captcha:
            return Listing(paused=captcha, paused_why=Outcome.CAPTCHA)
        except Stopped:  # a stop began: the token in hand is written under the names known
            return Listing()
        except TradovateError as error:
            return Listing(fault=error)
        names, refused = sane([account.name for account in accounts])
        return Listing(names=names, refused=refused)


def sane(listed: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The account names a key may be written under (letters, digits, `_ - .`, at most 64
    characters), and those refused: `*`, `:`, spaces, newlines, 5,000 characters."""
    names = tuple(dict.fromkeys(listed))
    return (
        tuple(name for name in names if SAFE_NAME.match(name)),
        tuple(name for name in names if not SAFE_NAME.match(name)),
    )
