"""What Azure Cache for Redis does to a client that stays connected for months, done by real
servers on loopback: a primary and a replica behind a TCP proxy standing in for Azure's load
balancer (docs/deploy.md#azure-cache-for-redis)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from daemon.sim.environment import wait_for
from daemon.sim.observe import TokenSampler, all_live, all_names
from daemon.sim.proxy import TcpProxy
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate, numbered_desk
from tests.helpers import Spawned, daemon_env, http_get, require_redis_server

pytestmark = pytest.mark.e2e

TOKEN_LIFETIME_S = 30.0


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    require_redis_server()
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    with RedisServer(workdir=tmp_path / "a") as primary:
        replica_of = ("--replicaof", "127.0.0.1", str(primary.port))
        with RedisServer(workdir=tmp_path / "b", extra_args=replica_of) as replica:
            wait_for(
                lambda: replica.client().info("replication")["master_link_status"] == "up",
                what="the replica in sync",
            )
            yield primary, replica


def fail_over(old: RedisServer, new: RedisServer, proxy: TcpProxy, *, close_open: bool) -> None:
    """Azure's planned failover: the replica becomes primary, the old primary its replica
    (answering READONLY to writes), and the load balancer sends new connections to the new one."""
    new.client().replicaof("NO", "ONE")
    old.client().replicaof("127.0.0.1", str(new.port))
    proxy.switch(new.port, close_open=close_open)


def run_through_failover(
    servers: tuple[RedisServer, RedisServer],
    processes: Spawned,
    tmp_path: Path,
    *,
    close_open: bool,
    daemons: int,
    after_s: float,
) -> None:
    """`daemons` daemons through the proxy; a failover once every token is live; `after_s` more
    seconds sampled every 0.25 s: no sample missing or dead, no new session."""
    primary, replica = servers
    with (
        TcpProxy(primary.port) as proxy,
        FakeTradovate(numbered_desk(4, 1), token_lifetime_s=TOKEN_LIFETIME_S) as fake,
    ):
        env = daemon_env(fake, f"redis://127.0.0.1:{proxy.port}/0", ORCA_HEALTH_ADDR="")
        started = [processes.start(env, cwd=str(tmp_path)) for _ in range(daemons)]
        names, logins = all_names(fake), list(fake.users)
        wait_for(lambda: all_live(replica.client(), names, fake), what="every token live")
        # The replica is read throughout: before the failover it follows the primary within
        # milliseconds, after it is the primary.
        sampler = TokenSampler(replica.client, names, fake.is_live, every_s=0.25).start()
        renewals = {login: fake.seen.renewals[login] for login in logins}
        fail_over(primary, replica, proxy, close_open=close_open)
        _wait(after_s)
        samples = sampler.stop()
        assert all(process.process.poll() is None for process in started)
        assert (samples.missing, samples.stale, samples.unreadable) == (0, 0, 0), samples
        assert samples.taken >= after_s * 4 * 0.8  # rounds of every key, 0.25 s apart
        assert all(fake.seen.sessions_opened[login] == 1 for login in logins)
        renewed = [fake.seen.renewals[login] - renewals[login] for login in logins]
        assert min(renewed) >= int(after_s / TOKEN_LIFETIME_S), renewed


def _wait(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() >= deadline, timeout=seconds + 5, what=f"{seconds} s")


@pytest.mark.long
@pytest.mark.timeout(120)
@pytest.mark.parametrize("close_open", [False, True], ids=["left-open", "closed"])
def test_a_failover_loses_no_token_whether_old_connections_stay_or_close(
    primary_and_replica: tuple[RedisServer, RedisServer],
    processes: Spawned,
    tmp_path: Path,
    close_open: bool,
) -> None:
    run_through_failover(
        primary_and_replica, processes, tmp_path, close_open=close_open, daemons=1, after_s=35
    )


@pytest.mark.soak
@pytest.mark.timeout(300)
@pytest.mark.parametrize("close_open", [False, True], ids=["left-open", "closed"])
def test_two_daemons_ride_a_failover_for_75_s_of_30_s_tokens(
    primary_and_replica: tuple[RedisServer, RedisServer],
    processes: Spawned,
    tmp_path: Path,
    close_open: bool,
) -> None:
    run_through_failover(
        primary_and_replica, processes, tmp_path, close_open=close_open, daemons=2, after_s=75
    )


def test_a_replica_is_named_readonly_by_readyz(
    primary_and_replica: tuple[RedisServer, RedisServer],
    processes: Spawned,
    tmp_path: Path,
) -> None:
    """While only a replica answers, /readyz says `readonly`."""
    _, replica = primary_and_replica
    with FakeTradovate(numbered_desk(1, 1)) as fake:
        env = daemon_env(fake, replica.url, ORCA_HEALTH_ADDR="127.0.0.1:0")
        daemon = processes.start(env, cwd=str(tmp_path))
        address = daemon.event("daemon.starting")["health"]

        def readonly() -> bool:
            code, body = http_get(f"http://{address}/readyz")
            return code == 503 and '"readonly"' in body

        wait_for(readonly, timeout=15, what="/readyz naming readonly")
        with pytest.raises(redis.ReadOnlyError):
            replica.client().set("x", "1")
