"""One pass over the logins, for `run --once` and `tokens refresh` without a daemon: under the
logins' leases like a daemon, waiting out auth pacing and penalty tickets but not a spent
budget."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import redis
import structlog

from daemon.constants import REDIS_WATCH_INTERVAL_S
from daemon.refresh.progress import Attempt
from daemon.service.components import Components
from daemon.store.lease import holders

log = structlog.get_logger("daemon.service")

ONCE_LONGEST_WAIT_S = 120.0  # `run --once` waits out pacing this long, not a spent budget


class LoginsHeld(Exception):
    """`run --once` or `tokens refresh` found a live daemon holding a login's lease."""

    def __init__(self, owner: str | None, login: str) -> None:
        super().__init__(
            f"a running daemon ({owner or 'unknown'}) holds the lease of {login}: "
            "ask it with `orca-tokens tokens refresh`, or stop it first"
        )
        self.owner = owner


class OnePass:
    def __init__(self, components: Components) -> None:
        self._c = components

    def run(self) -> int:
        """Refresh every login once. 0 when all succeeded, 1 otherwise."""
        settings = self._c.settings
        log.info(
            "daemon.once",
            logins=[login.name for login in settings.logins],
            redis=settings.redis.target(),
            tradovate_env=settings.tradovate.env,
        )
        try:
            attempts = self.refresh()
        except redis.RedisError as error:
            log.error("redis.unavailable", error=str(error), redis=settings.redis.target())
            return 1
        except LoginsHeld as held:
            log.error("daemon.once_refused", reason=str(held), leader=held.owner)
            return 1
        failed = sorted(name for name, attempt in attempts.items() if not attempt.ok)
        log.info("daemon.once_finished", refreshed=len(attempts) - len(failed), failed=failed)
        return 1 if failed else 0

    def refresh(
        self, names: list[str] | None = None, *, verify: bool = False, operator: bool = False
    ) -> dict[str, Attempt]:
        """Adopt what Redis holds, then refresh every login (or those named) once; queued
        alerts and history are delivered before it returns. Raises RedisError, before any
        Tradovate call, when Redis does not answer: without Redis a fresh token could not be
        stored, so no session is spent on it. LoginsHeld when a live daemon holds a lease (ask
        that one instead); while it works a thread of its own renews the leases."""
        refresher, leases = self._c.refresher, self._c.ownership.leases
        names = list(refresher.states) if names is None else names
        taken = leases.take(names)
        if len(taken) < len(names):
            leases.release(taken)
            busy = sorted(set(names) - set(taken))
            raise LoginsHeld(holders(self._c.lease_client, busy[:1]).get(busy[0]), busy[0])
        keeping = threading.Event()
        keeper = threading.Thread(target=self._keep_leases, args=(keeping,), daemon=True)
        keeper.start()
        try:
            self._c.adoption.adopt(names)
            refresher.budget.load_scripts()
            with ThreadPoolExecutor(max_workers=self._c.settings.refresh_concurrency) as pool:
                settled = pool.map(lambda name: self._until_settled(name, verify, operator), names)
                attempts = dict(zip(names, settled, strict=True))
        finally:
            keeping.set()
            keeper.join()
            leases.release(names)
            self._c.close_clients()
        return attempts

    def _keep_leases(self, done: threading.Event) -> None:
        while not done.wait(REDIS_WATCH_INTERVAL_S):
            try:
                self._c.ownership.leases.renew()
            except redis.RedisError as error:
                self._c.redis_health.failed(error)

    def _until_settled(self, name: str, verify: bool = False, operator: bool = False) -> Attempt:
        """Wait out auth pacing and penalty tickets, but not an address budget that frees
        only in an hour: a one-off pass then reports the login as not refreshed."""
        refresher = self._c.refresher
        attempt = refresher.refresh(name, force=not verify, verify=verify, operator=operator)
        while (
            attempt.deferred
            and attempt.delay_s <= ONCE_LONGEST_WAIT_S
            and not self._c.stopping.wait(attempt.delay_s)
        ):
            attempt = refresher.refresh(name, force=not verify)
        return attempt
