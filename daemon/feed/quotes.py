"""Quotes merged per contract into the reference's price, `{Last, Bid, Ask, Volume, High, Low,
Timestamp}`. A quote may carry any of its entries, and an entry either of its fields, so each
merges into what the contract had; a contract is written only once every field is known (the
reference's readers format each as a number)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

# The reference's field: (Tradovate's entry, its field)
FIELDS = {
    "Last": ("Trade", "price"),
    "Bid": ("Bid", "price"),
    "Ask": ("Offer", "price"),
    "Volume": ("TotalTradeVolume", "size"),
    "High": ("HighPrice", "price"),
    "Low": ("LowPrice", "price"),
}
_BY_ENTRY = {entry: (name, part) for name, (entry, part) in FIELDS.items()}
_ORDER = (*FIELDS, "Timestamp")
_COMPLETE = len(_ORDER)  # a price is written once it has every field


def timestamp_ms(value: object) -> int | None:
    """A quote's time (ISO 8601, `Z` or an offset) in ms since the epoch, None if not one."""
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except ValueError:
        return None


class QuoteBook:
    """The latest of each contract subscribed, by Tradovate's contract id."""

    def __init__(self) -> None:
        self._prices: dict[int, dict[str, Any]] = {}
        self._times: dict[int, str] = {}

    def merge(self, quotes: Iterable[object]) -> list[int]:
        """The contracts whose price changed and is complete, in the order their quotes came
        (what is not a quote is passed over: the socket's JSON is Tradovate's to shape)."""
        changed: list[int] = []
        prices = self._prices
        for quote in quotes:
            if type(quote) is not dict:
                continue
            contract = quote.get("contractId")
            entries = quote.get("entries")
            stamp = timestamp_ms(quote.get("timestamp"))
            if type(contract) is not int or type(entries) is not dict or stamp is None:
                continue
            price = prices.get(contract)
            if price is None:
                price = prices[contract] = {}
            for entry, found in entries.items():
                field = _BY_ENTRY.get(entry)
                if field is not None and type(found) is dict:
                    value = found.get(field[1])
                    if type(value) is float or type(value) is int:  # not bool, not a string
                        price[field[0]] = value
            price["Timestamp"] = stamp
            self._times[contract] = quote["timestamp"]
            if self.complete(contract):
                changed.append(contract)
        return changed

    def complete(self, contract: int) -> bool:
        return len(self._prices.get(contract, ())) == _COMPLETE

    def price(self, contract: int) -> dict[str, Any]:
        """The reference's shape, fields in its order."""
        found = self._prices[contract]
        return {name: found[name] for name in _ORDER}

    def legacy(self, contract: int, instrument: str) -> dict[str, Any]:
        """The desk bot's shape on `TRADOVATE_{SYMBOL}_PRICE`, for the cut-over."""
        return {
            "LAST": self._prices[contract]["Last"],
            "TIMESTAMP": self._times[contract],
            "INSTRUMENT": instrument,
        }

    def known(self) -> list[int]:
        return [contract for contract in self._prices if self.complete(contract)]
