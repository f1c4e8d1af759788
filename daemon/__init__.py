"""orca-token-daemon: keeps a valid Tradovate access token for every login in Redis.

The library for trading programs is `from daemon import cache, price, tokens`
(docs/library.md); they live in `daemon.store` and are loaded on first use, so importing the
daemon's own modules does not drag them in.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["__version__", "cache", "price", "tokens"]

if TYPE_CHECKING:
    from daemon.store import cache, price, tokens

_LIBRARY = frozenset({"cache", "price", "tokens"})


def __getattr__(name: str) -> ModuleType:
    if name in _LIBRARY:
        module = importlib.import_module(f"daemon.store.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'daemon' has no attribute {name!r}")
