"""What a trading program would see, measured while daemons run against the simulator: a sampler
of every token key, whether every key holds a live token, and who owns which login. Shared by
the end-to-end tests, `make chaos` and the benchmarks."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import redis

from daemon.refresh.assignment import assign
from daemon.service.ownership import members_of
from daemon.sim.tradovate import FakeTradovate
from daemon.store.client import get_many
from daemon.store.heartbeat import live_instances
from daemon.store.lease import holders
from daemon.store.tokens import token_key

SAMPLE_EVERY_S = 0.1


@dataclass
class Samples:
    taken: int = 0
    stale: int = 0  # a key holding a token Tradovate would refuse: the failure that matters
    missing: int = 0  # a key absent while Redis answers, outside any named window
    missing_in: dict[str, int] = field(default_factory=dict)  # ... inside a named window
    unreadable: int = 0  # Redis itself did not answer
    stale_names: set[str] = field(default_factory=set)


class TokenSampler:
    """Reads every token key on a fixed period and checks each value against the simulator."""

    def __init__(
        self,
        connect: Callable[[], redis.Redis],
        names: Sequence[str],
        is_live: Callable[[str], bool],
        every_s: float = SAMPLE_EVERY_S,
    ) -> None:
        self.samples = Samples()
        self._connect = connect
        self._keys = [token_key(name) for name in names]
        self._is_live = is_live
        self._every_s = every_s
        self._stop = threading.Event()
        self._window: str | None = None
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> TokenSampler:
        self._thread.start()
        return self

    def stop(self) -> Samples:
        self._stop.set()
        self._thread.join()
        return self.samples

    @contextlib.contextmanager
    def window(self, name: str) -> Iterator[None]:
        """Missing keys inside this block are counted apart: the expected gap while Redis is
        restored, or while no leader renews."""
        self._window = name
        try:
            yield
        finally:
            self._window = None

    def _run(self) -> None:
        client = self._connect()
        while not self._stop.wait(self._every_s):
            try:
                values = get_many(client, self._keys)
            except redis.RedisError:
                self.samples.unreadable += 1
                continue
            self.samples.taken += 1
            for key, value in zip(self._keys, values, strict=True):
                window = self._window
                if value is None and window is not None:
                    self.samples.missing_in[window] = self.samples.missing_in.get(window, 0) + 1
                elif value is None:
                    self.samples.missing += 1
                elif not self._is_live(str(value)):
                    self.samples.stale += 1
                    self.samples.stale_names.add(key)


def all_names(fake: FakeTradovate) -> list[str]:
    return [n for user in fake.users.values() for n in (user.name, *user.accounts)]


def all_live(client: redis.Redis, names: Sequence[str], fake: FakeTradovate) -> bool:
    try:
        values = get_many(client, [token_key(name) for name in names])
    except redis.RedisError:
        return False
    return all(isinstance(v, str) and fake.is_live(v) for v in values)


def owner_pids(client: redis.Redis, logins: Sequence[str]) -> dict[str, int | None]:
    """The pid of each login's owner (instance ids are `{host}:{pid}:{random}`), None for a
    login nobody holds or when Redis does not answer."""
    try:
        owners = holders(client, list(logins))
    except redis.RedisError:
        return dict.fromkeys(logins)
    return {login: int(o.split(":")[1]) if o else None for login, o in owners.items()}


def shared_as_assigned(client: redis.Redis, logins: Sequence[str], instances: int) -> bool:
    """`instances` share the logins and every login is held by the one the live heartbeats
    assign it to: the membership has settled and every handover is done."""
    try:
        sharing = [b for b in live_instances(client) if not b.standby]
        if len(sharing) != instances:
            return False
        return holders(client, list(logins)) == assign(list(logins), members_of(sharing))
    except redis.RedisError:
        return False


def busiest_pid(client: redis.Redis, logins: Sequence[str]) -> int | None:
    """The pid owning the most logins, once every login is owned."""
    pids = list(owner_pids(client, logins).values())
    if None in pids or not pids:
        return None
    return max(set(pids), key=lambda pid: (pids.count(pid), pid))
