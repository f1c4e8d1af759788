"""Refresh requests: `orca-tokens tokens refresh` and readers that saw a 401 push them on one
list any instance may pop; a request for a login another instance owns is passed on to it, and
the owner answers under the request's id."""

from __future__ import annotations

import contextlib

import redis
import structlog

from daemon.service.components import Components
from daemon.service.jobs import JobRunner
from daemon.store.lease import holders
from daemon.store.requests import RefreshRequest, answer, forward, take_requests
from daemon.store.status import read_statuses, statuses_by_name

log = structlog.get_logger("daemon.service")

REFRESH_REQUESTS_PER_ROUND = 10


class RequestBroker:
    def __init__(self, components: Components, jobs: JobRunner) -> None:
        self._c = components
        self._jobs = jobs

    def take(self) -> None:
        """Up to a round's worth of requests, each run on a refresh thread. RedisError
        propagates (the membership round reports it)."""
        lease_client, instance = self._c.lease_client, self._c.instance
        for request in take_requests(lease_client, instance, REFRESH_REQUESTS_PER_ROUND):
            if request is None:
                log.warning("refresh_request.invalid")
                continue
            name = None if request.login is None else self.login_of(request.login)
            owner = instance if name is None else holders(lease_client, [name])[name]
            if owner is not None and owner != instance:
                forward(lease_client, owner, request)
                continue
            self._jobs.submit(self._serve, request, name)

    def login_of(self, asked: str) -> str | None:
        """The configured login whose token is written under `asked`: the owner of an account
        is known here from its account list, or from the login's status in Redis."""
        refresher = self._c.refresher
        name = refresher.names.login_of(asked)
        if name is None:
            found = statuses_by_name(read_statuses(self._c.redis, list(refresher.states)))
            name = found[asked].login if asked in found else None
        return name if name in refresher.states else None

    def _serve(self, request: RefreshRequest, login: str | None) -> None:
        """A named login (or, for a request naming none, every login this instance owns)."""
        if request.login is not None and login is None:
            outcomes = {request.login: "unknown login"}
        else:
            outcomes = {}
            for name in self._c.owned() if login is None else [login]:
                attempt = self._c.refresher.refresh(
                    name,
                    force=not request.verify,
                    verify=request.verify,
                    operator=request.operator,
                )
                self._jobs.reschedule(name, attempt.delay_s)
                outcomes[name] = attempt.described()
        log.info(
            "refresh_request.done", request=request.id, probe=request.verify, outcomes=outcomes
        )
        with contextlib.suppress(redis.RedisError):  # the asker times out and says so
            answer(self._c.redis, request.id, outcomes)
