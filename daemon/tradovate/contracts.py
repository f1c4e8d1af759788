"""Tradovate's contract library: a contract by name, a product root's listed months, and when
a maturity expires. What the market-data feed needs to turn symbols into the ids quotes carry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from daemon.tradovate.client import TradovateClient
from daemon.tradovate.errors import InvalidResponse

CONTRACT_FIND_ENDPOINT: Final = "/contract/find"
CONTRACT_SUGGEST_ENDPOINT: Final = "/contract/suggest"
MATURITY_ENDPOINT: Final = "/contractMaturity/item"
CONTRACT_SUGGESTIONS: Final = 20  # a product root's listed months, and more


@dataclass(frozen=True)
class Contract:
    id: int
    name: str
    maturity_id: int


class ContractLibrary:
    def __init__(self, tradovate: TradovateClient) -> None:
        self._tradovate = tradovate

    def find(self, access_token: str, name: str) -> Contract | None:
        """A contract by its name (`MNQZ5`). None: Tradovate lists no such contract."""
        data = self._tradovate.get(CONTRACT_FIND_ENDPOINT, access_token, {"name": name})
        if data is None or (isinstance(data, dict) and "id" not in data):
            return None  # a 404, `null` or an errorText
        return _contract(data, CONTRACT_FIND_ENDPOINT)

    def suggest(self, access_token: str, text: str) -> list[Contract]:
        """Contracts whose fields hold `text` (a product root's months among them)."""
        params = {"t": text, "l": str(CONTRACT_SUGGESTIONS)}
        data = self._tradovate.get(CONTRACT_SUGGEST_ENDPOINT, access_token, params)
        if not isinstance(data, list):
            raise InvalidResponse(f"{CONTRACT_SUGGEST_ENDPOINT}: answer is not a JSON list")
        return [_contract(item, CONTRACT_SUGGEST_ENDPOINT) for item in data]

    def expires_at(self, access_token: str, maturity_id: int) -> float:
        """When a contract maturity expires (its `expirationDate`), epoch seconds."""
        data = self._tradovate.get(MATURITY_ENDPOINT, access_token, {"id": str(maturity_id)})
        found = data.get("expirationDate") if isinstance(data, dict) else None
        try:
            return datetime.fromisoformat(str(found).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise InvalidResponse(f"{MATURITY_ENDPOINT}: no expirationDate") from None


def _contract(item: object, endpoint: str) -> Contract:
    if not isinstance(item, dict):
        raise InvalidResponse(f"{endpoint}: a contract is not a JSON object")
    found = item.get("id"), item.get("name"), item.get("contractMaturityId")
    if not (isinstance(found[0], int) and isinstance(found[1], str) and isinstance(found[2], int)):
        raise InvalidResponse(f"{endpoint}: a contract lacks its id, name or contractMaturityId")
    return Contract(found[0], found[1], found[2])
