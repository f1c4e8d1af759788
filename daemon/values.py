"""Values that come from outside the process (Redis, an HTTP body): read without trusting them."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

# A name the daemon writes into a Redis key (an account, a cache endpoint, a budget group):
# letters, digits, `_ - .`, at most 64 characters; never `*`, `:`, spaces or a newline.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def json_or_none(raw: object) -> Any:
    """The JSON value of a str or bytes, or None when it is neither, or is not JSON (a bad
    encoding, a parse error, nesting past the parser's depth)."""
    if not isinstance(raw, str | bytes):
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def json_object(raw: object) -> dict[str, Any] | None:
    """The JSON object of `raw`, or None when it holds anything else."""
    value = json_or_none(raw)
    return value if isinstance(value, dict) else None


def subnet_of(address: str) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) an address is in: what Tradovate keys budgets and penalty
    tickets to. None for what is not an address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
