"""Refresh requests through Redis: `orca-tokens tokens refresh` and trading programs that saw a
401 ask the running daemons; the owner of the login answers each request under its own key.

A request is JSON `{id, login, probe}` on the list `orca:refresh:requests`, which any instance
pops: one that does not own the login passes it on to the owner's own list,
`orca:refresh:requests:{instance}`. `login` null means every login the instance that pops it
owns (`tokens refresh` without a name asks once per login); `probe` true (a reader's 401) asks
the daemon to check the token with Tradovate first and to spend a renewal or a login only when
it is refused.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from daemon.constants import (
    REFRESH_INSTANCE_REQUESTS_KEY_PREFIX,
    REFRESH_REQUEST_TTL_S,
    REFRESH_REQUESTS_KEY,
    REFRESH_RESULT_KEY_PREFIX,
)
from daemon.store.client import pipeline
from daemon.values import SAFE_NAME, json_object

ANSWER_POLL_S = 0.2
REQUEST_MAX_BYTES = 512  # a request this protocol writes is under 150 bytes
_REQUEST_ID = re.compile(r"^[0-9a-f]{16}$")

# Pop up to ARGV[1] requests; one longer than ARGV[2] bytes comes back as its length only (a
# 100 MB value never reaches the daemon), and a list key of another type is dropped (-1).
_POP = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local value = redis.pcall('LPOP', KEYS[1])
  if type(value) == 'table' and value.err then
    redis.call('DEL', KEYS[1])
    out[#out + 1] = -1
    break
  end
  if not value then break end
  if string.len(value) > tonumber(ARGV[2]) then out[#out + 1] = string.len(value)
  else out[#out + 1] = value end
end
return out
"""


@dataclass(frozen=True)
class RefreshRequest:
    id: str
    login: str | None
    verify: bool = False  # "probe" on the wire: older libraries in trading programs write it
    operator: bool = False  # `tokens refresh NAME`: may try a login the rejected ladder holds

    def to_json(self) -> str:
        fields = {"id": self.id, "login": self.login, "probe": self.verify}
        return json.dumps({**fields, "operator": True} if self.operator else fields)

    @classmethod
    def parse(cls, raw: object) -> RefreshRequest | None:
        """A request as `push_request` writes it, or None (too large, not JSON, an id or a
        login name that could not be one)."""
        if not isinstance(raw, str | bytes) or len(raw) > REQUEST_MAX_BYTES:
            return None
        value = json_object(raw)
        if value is None or not _REQUEST_ID.match(str(value.get("id"))):
            return None
        login = value.get("login")
        if login is not None and not (isinstance(login, str) and SAFE_NAME.match(login)):
            return None
        return cls(
            value["id"],
            login if isinstance(login, str) else None,
            value.get("probe") is True,
            value.get("operator") is True and isinstance(login, str),
        )


def push_request(
    client: redis.Redis, login: str | None, *, verify: bool = False, operator: bool = False
) -> str:
    """Queue a request for the running daemons; returns its id (its answer lands under it)."""
    request = RefreshRequest(secrets.token_hex(8), login, verify, operator and not verify)
    _push(client, REFRESH_REQUESTS_KEY, request)
    return request.id


def forward(client: redis.Redis, instance: str, request: RefreshRequest) -> None:
    """Pass a request on to the instance that owns its login."""
    _push(client, f"{REFRESH_INSTANCE_REQUESTS_KEY_PREFIX}{instance}", request)


def _push(client: redis.Redis, key: str, request: RefreshRequest) -> None:
    pipe = pipeline(client, transaction=True)
    pipe.rpush(key, request.to_json())
    pipe.expire(key, REFRESH_REQUEST_TTL_S)
    pipe.execute()


def take_requests(client: redis.Redis, instance: str, most: int) -> Iterator[RefreshRequest | str]:
    """Pop up to `most` requests from each list, those passed on to `instance` first, one round
    trip a list; what cannot be a request comes as a line saying what it was."""
    for key in (f"{REFRESH_INSTANCE_REQUESTS_KEY_PREFIX}{instance}", REFRESH_REQUESTS_KEY):
        for raw in _pop(client, key, most):
            if isinstance(raw, int):
                yield f"{key} is not a list: dropped" if raw < 0 else f"{raw} bytes"
                continue
            request = RefreshRequest.parse(raw)
            yield request if request is not None else f"{len(raw)} bytes, not a request"


def _pop(client: redis.Redis, key: str, most: int) -> list[str | int]:
    popped = client.eval(_POP, 1, key, most, REQUEST_MAX_BYTES)
    return list(popped) if isinstance(popped, list) else []


def answer(client: redis.Redis, request_id: str, outcomes: dict[str, str]) -> None:
    client.set(
        f"{REFRESH_RESULT_KEY_PREFIX}{request_id}", json.dumps(outcomes), ex=REFRESH_REQUEST_TTL_S
    )


def await_answer(client: redis.Redis, request_id: str, timeout_s: float) -> dict[str, str] | None:
    """The owner's answer {login: outcome}, or None when none came within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        raw = client.get(f"{REFRESH_RESULT_KEY_PREFIX}{request_id}")
        if isinstance(raw, str):
            value = json_object(raw)
            return None if value is None else {str(k): str(v) for k, v in value.items()}
        if time.monotonic() >= deadline:
            return None
        time.sleep(ANSWER_POLL_S)
