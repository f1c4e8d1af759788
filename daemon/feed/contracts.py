"""Which contract each configured symbol names. An explicit contract (`MNQZ5`: a root, a month
code and the year's last digits) is looked up by name; a product root (`MNQ`) is resolved to its
front month: of the root's listed months, the one expiring first but more than FRONT_MONTH_ROLL_S
from now (the upstream system rolled 7 days before expiry). Quotes carry contract ids, so each
symbol's id is what these lookups are for."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import structlog

from daemon.constants import FRONT_MONTH_ROLL_S
from daemon.tradovate.contracts import Contract, ContractLibrary

log = structlog.get_logger("daemon.feed")

MONTH_CODES = "FGHJKMNQUVXZ"
_CONTRACT_NAME = re.compile(rf"[A-Z0-9]+[{MONTH_CODES}]\d{{1,2}}")


@dataclass(frozen=True)
class Subscription:
    """A configured symbol and the contract it names now."""

    symbol: str  # as configured: `MNQZ5` or `MNQ`
    contract: Contract

    @cached_property
    def names(self) -> tuple[str, ...]:
        """The price keys written for it: the contract's, and the root's too (`MNQ`)."""
        return tuple(dict.fromkeys((self.contract.name, self.symbol)))


def is_contract_name(symbol: str) -> bool:
    return _CONTRACT_NAME.fullmatch(symbol) is not None


def front_month(
    root: str, listed: Iterable[Contract], expires_at: dict[int, float], now: float
) -> Contract | None:
    """The root's month expiring first, more than FRONT_MONTH_ROLL_S from now."""
    months = re.compile(rf"{re.escape(root)}[{MONTH_CODES}]\d{{1,2}}")
    live = [
        contract
        for contract in listed
        if months.fullmatch(contract.name)
        and expires_at.get(contract.maturity_id, 0.0) - FRONT_MONTH_ROLL_S > now
    ]
    return min(live, key=lambda c: (expires_at[c.maturity_id], c.name), default=None)


def resolve(
    library: ContractLibrary, access_token: str, symbols: Iterable[str], now: float
) -> list[Subscription]:
    """Each symbol's contract now; one Tradovate does not know is named in the log and left
    out (the others still run). TradovateUnavailable and TokenRefused propagate: the caller
    tries again."""
    found = []
    for symbol in symbols:
        contract = _contract_of(library, access_token, symbol, now)
        if contract is None:
            log.warning("feed.symbol_unknown", symbol=symbol)
        else:
            found.append(Subscription(symbol, contract))
    return found


def _contract_of(
    library: ContractLibrary, access_token: str, symbol: str, now: float
) -> Contract | None:
    if is_contract_name(symbol):
        return library.find(access_token, symbol)
    listed = library.suggest(access_token, symbol)
    expiries = {
        maturity: library.expires_at(access_token, maturity)
        for maturity in {c.maturity_id for c in listed if c.name.startswith(symbol)}
    }
    return front_month(symbol, listed, expiries, now)
