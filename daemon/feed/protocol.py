"""Tradovate's market-data socket as text frames. The server sends `o` once open, `h` as its
heartbeat, `a[...]` (a JSON array of messages: answers `{"s", "i", "d"}` and events `{"e", "d"}`)
and `c[code, "reason"]` before it closes. The client sends requests, `endpoint\\nid\\nquery\\nbody`,
and `[]` as its own heartbeat at least every 2.5 s, or it is dropped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

CLIENT_HEARTBEAT = "[]"
OPEN, HEARTBEAT, MESSAGES, CLOSE = "o", "h", "a", "c"


class FrameError(ValueError):
    """A frame this protocol does not have (its first characters are named, never more)."""


class Frame(NamedTuple):  # a tuple: a thousand are made a second
    kind: str  # OPEN, HEARTBEAT, MESSAGES or CLOSE
    messages: tuple[object, ...] = ()  # as sent: the socket's JSON is Tradovate's to shape
    close_reason: str = ""


def parse(text: str) -> Frame:
    """One frame from the server."""
    kind = text[:1]
    if kind != MESSAGES and kind != CLOSE:
        if text in (OPEN, HEARTBEAT):
            return Frame(text)
        raise FrameError(f"unknown frame {text[:16]!r}")
    try:
        value = orjson.loads(text[1:])
    except ValueError as error:
        raise FrameError(f"{kind} frame is not JSON: {text[1:17]!r}") from error
    if type(value) is not list:
        raise FrameError(f"{kind} frame holds no array")
    if kind == CLOSE:
        return Frame(CLOSE, close_reason=" ".join(str(part) for part in value))
    return Frame(MESSAGES, tuple(value))


def request(endpoint: str, request_id: int, body: Mapping[str, Any] | None = None) -> str:
    """A request frame; its answer carries `request_id` as `i`."""
    return f"{endpoint}\n{request_id}\n\n{'' if body is None else json.dumps(body)}"


def authorize(request_id: int, token: str) -> str:
    """The bare token (a quoted one is refused with 401)."""
    return f"authorize\n{request_id}\n\n{token}"
