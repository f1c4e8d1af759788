"""Values another program wrote where the daemon keeps its own (a key of another type, bytes
that are no JSON state, a heartbeat no instance writes): said once per key and kind, with what
it was, the key and a fingerprint of the value, never the value itself. What the daemon owns it
then replaces; what it does not, it ignores."""

from __future__ import annotations

import structlog

from daemon.logs import fingerprint

log = structlog.get_logger("daemon.store")

_MOST_REMEMBERED = 10_000  # a flood of distinct keys is said again rather than held forever
_said: set[tuple[str, str]] = set()


def report_foreign(key: str, what: str, raw: object = None) -> None:
    if (key, what) in _said:
        return
    if len(_said) >= _MOST_REMEMBERED:
        _said.clear()
    _said.add((key, what))
    fields: dict[str, object] = {}
    if isinstance(raw, str | bytes):
        text = raw if isinstance(raw, str) else raw.decode(errors="replace")
        fields = {"fingerprint": fingerprint(text), "bytes": len(text.encode())}
    log.warning("redis.foreign_value", key=key[:200], what=what[:200], **fields)


def forget_reports() -> None:
    """Say every foreign value again (tests; nothing in the daemon needs it)."""
    _said.clear()
