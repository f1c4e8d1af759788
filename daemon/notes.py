"""A login's notes: what its status record (`notes`) says a person should know, each in one
sentence, and the word or two `status` shows for it. A note is written while it is current and
gone once it is not. The sentences are made here and read here, so the two never drift."""

from __future__ import annotations

import re

from daemon.outcomes import Outcome
from daemon.token_format import iso

ACCOUNTS_NOT_LISTED = "accounts not listed: API key scope or device id"
REFUSED_NAME = "refused account name"
_PASSWORD = f"{Outcome.PASSWORD_EXPIRING}: "
_UNCONFIRMED = f"{Outcome.UNCONFIRMED}: userStatus "
_WRITTEN_BY = re.compile(r"^(?P<account>.+) is written by (?P<owner>.+)$")
_PASSWORD_SAID = re.compile(
    r"^(?:expires at \d{4}-(?P<md>\d\d-\d\d)\S*)?(?:; )?(?:Tradovate's hint (?P<hint>.+))?$"
)
_WORDS_MAX_CHARS = 60


def password(expires_at: float | None, hint: str | None) -> str:
    said = (
        f"expires at {iso(expires_at)}" if expires_at is not None else "",
        f"Tradovate's hint {hint}" if hint else "",
    )
    return _PASSWORD + "; ".join(part for part in said if part)


def unconfirmed(user_status: str) -> str:
    return f"{_UNCONFIRMED}{user_status}"


def accounts_not_listed(why: str, again_in_s: float) -> str:
    return f"{ACCOUNTS_NOT_LISTED} ({why}), asked again in {again_in_s:.0f} s"


def refused_name(name: str) -> str:
    return f"{REFUSED_NAME} {name[:40]!r}"


def written_by(account: str, owner: str) -> str:
    return f"{account} is written by {owner}"


def is_password(note: str) -> bool:
    return note.startswith(_PASSWORD)


def is_unconfirmed(note: str) -> bool:
    return note.startswith(_UNCONFIRMED)


def words(note: str) -> str:
    """The note in a word or two, as `status` shows it under the login's row."""
    if is_password(note):
        said = _PASSWORD_SAID.match(note.removeprefix(_PASSWORD))
        if said is None:
            return "password expiring"
        expiry = f"password expires {said['md']}" if said["md"] else "password"
        return (
            f"{expiry}{',' if said['md'] else ''} hint {said['hint']}" if said["hint"] else expiry
        )
    if is_unconfirmed(note):
        return f"unconfirmed ({note.removeprefix(_UNCONFIRMED)})"[:_WORDS_MAX_CHARS]
    if note.startswith(ACCOUNTS_NOT_LISTED):
        return "accounts not listed"
    if note.startswith(REFUSED_NAME):
        return f"account name refused: {note.removeprefix(REFUSED_NAME).strip()}"[:_WORDS_MAX_CHARS]
    skipped = _WRITTEN_BY.match(note)
    if skipped is not None:
        return f"{skipped['account']} skipped (written by {skipped['owner']})"[:_WORDS_MAX_CHARS]
    return note[:_WORDS_MAX_CHARS]
