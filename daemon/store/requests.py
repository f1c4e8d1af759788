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
from daemon.values import json_object

ANSWER_POLL_S = 0.2


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
        value = json_object(raw)
        if value is None or not isinstance(value.get("id"), str):
            return None
        login = value.get("login")
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


def take_requests(client: redis.Redis, instance: str, most: int) -> Iterator[RefreshRequest | None]:
    """Pop up to `most` requests, those passed on to `instance` first (None for one that
    cannot be read)."""
    for key in (f"{REFRESH_INSTANCE_REQUESTS_KEY_PREFIX}{instance}", REFRESH_REQUESTS_KEY):
        for _ in range(most):
            raw = client.lpop(key)
            if raw is None:
                break
            yield RefreshRequest.parse(raw)


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
