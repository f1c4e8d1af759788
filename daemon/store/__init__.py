"""Every Redis round trip: the shared connection pool, token and status keys, the lease, the
HFT cache and prices. Trading programs use `tokens`, `cache` and `price` from here."""
