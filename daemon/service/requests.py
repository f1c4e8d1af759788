"""Refresh requests: `orca-tokens tokens refresh` and readers that saw a 401 push them on one
list any instance may pop; a request for a login another instance owns is passed on to it, and
the owner answers under the request's id. What a request may cost is the gate's to say
(`daemon.service.request_gate`); a request runs on a refresh thread, never more of them at once
than half the refresh concurrency, so a flood never holds the pool the schedule needs."""

from __future__ import annotations

import contextlib

import redis
import structlog

from daemon.outcomes import Outcome
from daemon.service.components import Components
from daemon.service.jobs import Jobs
from daemon.service.request_gate import Admission, RequestGate
from daemon.store.lease import holders
from daemon.store.requests import RefreshRequest, answer, forward, take_requests
from daemon.store.status import read_statuses, statuses_by_name

log = structlog.get_logger("daemon.service")

REFRESH_REQUESTS_PER_ROUND = 10
_SPENDING = (Outcome.LOGIN, Outcome.RENEW)


class RequestBroker:
    def __init__(self, components: Components, jobs: Jobs) -> None:
        self._c = components
        self._jobs = jobs
        settings = components.settings
        self._gate = RequestGate(
            share=settings.renew_budget_per_hour // max(1, len(settings.logins)),
            window_s=settings.budget_window_s,
        )
        self._slots = max(1, settings.refresh_concurrency // 2)
        self._invalid_said = False

    def take(self) -> None:
        """Up to a round's worth of requests (fewer while requests still run). RedisError
        propagates (the membership round reports it)."""
        lease_client, instance = self._c.lease_client, self._c.instance
        most = min(REFRESH_REQUESTS_PER_ROUND, self._slots - self._gate.running())
        if most <= 0:
            return
        for request in take_requests(lease_client, instance, most):
            if isinstance(request, str):
                self._say_invalid(request)
                continue
            name = None if request.login is None else self.login_of(request.login)
            if request.login is not None and name is None:
                self._answer(request.id, {request.login: "unknown login"})
                continue
            owner = instance if name is None else holders(lease_client, [name])[name]
            if owner is not None and owner != instance:
                forward(lease_client, owner, request)
            elif name is None:
                self._jobs.submit(self._serve_every, request)
            else:
                admission, said = self._gate.admit(name, request.id, forced=not request.verify)
                if admission is Admission.RUN:
                    self._jobs.submit(self._serve, request, name)
                elif admission is Admission.ANSWERED:
                    self._answer(request.id, {name: said})

    def login_of(self, asked: str) -> str | None:
        """The configured login whose token is written under `asked`: the owner of an account
        is known here from its account list, or from the login's status in Redis."""
        refresher = self._c.refresher
        name = refresher.keeper.names.login_of(asked)
        if name is None:
            found = statuses_by_name(read_statuses(self._c.redis, list(refresher.states)))
            name = found[asked].login if asked in found else None
        return name if name in refresher.states else None

    def _serve(self, request: RefreshRequest, login: str) -> None:
        said, spent = self._run(request, login)
        for request_id in self._gate.done(login, said, forced=not request.verify, spent=spent):
            self._answer(request_id, {login: said})

    def _serve_every(self, request: RefreshRequest) -> None:
        """A request naming no login: every login this instance owns, each through the gate."""
        outcomes = {}
        for name in self._c.owned():
            admission, said = self._gate.admit(
                name, request.id, forced=not request.verify, join=False
            )
            if admission is Admission.RUN:
                said, spent = self._run(request, name)
                self._gate.done(name, said, forced=not request.verify, spent=spent)
            outcomes[name] = said
        self._answer(request.id, outcomes)

    def _run(self, request: RefreshRequest, name: str) -> tuple[str, bool]:
        """What the refresh did, and whether it spent a renewal or a login."""
        attempt = self._c.refresher.refresh(
            name, force=not request.verify, verify=request.verify, operator=request.operator
        )
        self._jobs.reschedule(name, attempt.delay_s)
        return attempt.described(), attempt.outcome in _SPENDING

    def _answer(self, request_id: str, outcomes: dict[str, str]) -> None:
        log.info("refresh_request.done", request=request_id, outcomes=outcomes)
        with contextlib.suppress(redis.RedisError):  # the asker times out and says so
            answer(self._c.redis, request_id, outcomes)

    def _say_invalid(self, what: str) -> None:
        """Said once a run (what, never the content): a flood would fill the log."""
        if not self._invalid_said:
            self._invalid_said = True
            log.warning("refresh_request.invalid", what=what, hint="said once; the rest dropped")
