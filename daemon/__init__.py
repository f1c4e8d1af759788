"""orca-token-daemon: keeps a valid Tradovate access token for every login in Redis."""

__version__ = "0.1.0"
