"""The operator's command line, `orca-tokens` (the top layer: it may import every other)."""

from daemon.cli.main import main

__all__ = ["main"]
