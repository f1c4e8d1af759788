"""Which names a login writes its token under: its own, and each of its accounts that no other
login owns and whose name is safe in a key."""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from daemon.refresh.progress import LoginProgress
from daemon.values import SAFE_NAME

log = structlog.get_logger("daemon.refresh")


class AccountNames:
    def __init__(self, states: Mapping[str, LoginProgress]) -> None:
        self._states = states

    def sane(self, state: LoginProgress, listed: list[str]) -> tuple[str, ...]:
        """The account names a key may be written under: letters, digits, `_ - .`, at most
        64 characters. Anything else (`*`, `:`, spaces, newlines, 5,000 characters) is refused
        with one warning, never written."""
        sane = []
        for name in dict.fromkeys(listed):
            if SAFE_NAME.match(name):
                sane.append(name)
            elif state.add_note(f"refused account name {name[:40]!r}"):
                log.warning("account.name_refused", login=state.name, name=name[:64])
        return tuple(sane)

    def owned(self, state: LoginProgress) -> tuple[str, ...]:
        """The names this login writes: its own, and each of its accounts that no other login
        owns. A configured login's own name belongs to that login alone; an account listed by
        two logins belongs to the first in configuration order (the other skips it, with one
        warning and a status note, until the lists change)."""
        names = [state.name]
        for account in state.accounts:
            if account == state.name:
                continue
            owner = self.login_of(account)
            if owner in (None, state.name):
                names.append(account)
            elif state.add_note(f"{account} is written by {owner}"):
                log.warning(
                    "account.owned_by_another", login=state.name, account=account, owner=owner
                )
        return tuple(names)

    def login_of(self, name: str) -> str | None:
        """The login whose token is written under `name` (a login's own name, or an account's:
        the first login in configuration order that lists it)."""
        if name in self._states:
            return name
        return next((s.name for s in self._states.values() if name in s.accounts), None)
