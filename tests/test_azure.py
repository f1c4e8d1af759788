"""What Azure Cache for Redis does to a client that stays connected for months, done by real
servers on loopback: a primary and a replica behind a TCP proxy standing in for Azure's load
balancer (docs/deploy.md#azure-cache-for-redis)."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from structlog.testing import capture_logs

from daemon.metrics import Metrics
from daemon.service.memory_watch import MemoryWatch
from daemon.sim.environment import wait_for
from daemon.sim.observe import TokenSampler, all_live, all_names, owner_pids
from daemon.sim.proxy import TcpProxy
from daemon.sim.redis_server import RedisServer
from daemon.sim.tradovate import FakeTradovate, numbered_desk
from daemon.store.credentials import FileCredentials
from daemon.store.health import RedisHealth
from tests.helpers import (
    DaemonProcess,
    Run,
    Spawned,
    daemon_env,
    http_get,
    require_redis_server,
)

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
        lost = [e for p in started for e in p.events() if e["event"] == "lease.lost"]
        assert lost == []  # a failover shorter than a lease's TTL gives up no lease
        assert (samples.missing, samples.stale, samples.unreadable) == (0, 0, 0), samples
        assert samples.taken >= after_s * 4 * 0.8  # rounds of every key, 0.25 s apart
        assert all(fake.seen.sessions_opened[login] == 1 for login in logins)
        renewed = [fake.seen.renewals[login] - renewals[login] for login in logins]
        assert min(renewed) >= int(after_s / TOKEN_LIFETIME_S), renewed


def _wait(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    wait_for(lambda: time.monotonic() >= deadline, timeout=seconds + 5, what=f"{seconds} s")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("close_open", [False, True], ids=["left-open", "closed"])
@pytest.mark.parametrize(
    ("daemons", "after_s"),
    [
        pytest.param(1, 35, marks=pytest.mark.long, id="one-daemon-35s"),
        pytest.param(2, 75, marks=pytest.mark.soak, id="two-daemons-75s"),
    ],
)
def test_a_failover_loses_no_token_whether_old_connections_stay_or_close(
    primary_and_replica: tuple[RedisServer, RedisServer],
    processes: Spawned,
    tmp_path: Path,
    close_open: bool,
    daemons: int,
    after_s: int,
) -> None:
    """In make test one daemon for 35 s; in make soak two for 75 s of 30 s tokens."""
    run_through_failover(
        primary_and_replica,
        processes,
        tmp_path,
        close_open=close_open,
        daemons=daemons,
        after_s=after_s,
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


@pytest.mark.long
@pytest.mark.timeout(90)
def test_an_8_s_write_pause_opens_no_session_and_the_leases_come_back_within_2_s(
    own_redis_server: RedisServer, processes: Spawned, tmp_path: Path
) -> None:
    """Azure's maintenance may stall a node (CLIENT PAUSE WRITE, or a stall like DEBUG SLEEP):
    longer than a lease lives (5 s), shorter than a token. No session is opened for it, and the
    leases are held again within 2 s of its end."""
    with FakeTradovate(numbered_desk(3, 1), token_lifetime_s=120) as fake:
        env = daemon_env(fake, own_redis_server.url, ORCA_HEALTH_ADDR="")
        daemon = processes.start(env, cwd=str(tmp_path))
        client = own_redis_server.client()
        names, logins = all_names(fake), list(fake.users)
        wait_for(lambda: all_live(client, names, fake), what="every token live")
        pid = daemon.process.pid
        wait_for(lambda: set(owner_pids(client, logins).values()) == {pid}, what="leases held")
        client.client_pause(8000, all=False)  # CLIENT PAUSE 8000 WRITE
        paused_at = time.monotonic()
        wait_for(lambda: time.monotonic() - paused_at >= 8, timeout=12, what="the pause")
        wait_for(
            lambda: set(owner_pids(client, logins).values()) == {pid},
            timeout=2,
            what="every lease held again within 2 s of the pause's end",
        )
        assert all(fake.seen.sessions_opened[login] == 1 for login in logins)
        assert all_live(client, names, fake)
        assert daemon.process.poll() is None


def test_doctor_names_a_policy_that_evicts_the_daemons_keys(
    own_redis_server: RedisServer, cli: Callable[[dict[str, str]], Run]
) -> None:
    own_redis_server.client().config_set("maxmemory-policy", "volatile-lru")  # Azure's default
    with FakeTradovate(numbered_desk(1, 1)) as fake:
        code, out, _ = cli(daemon_env(fake, own_redis_server.url))("doctor", "--json")
    findings = json.loads(out)["findings"]
    said = [f for f in findings if "maxmemory-policy volatile-lru" in f["text"]]
    assert said, findings
    assert said[0]["level"] == "warning"
    assert "noeviction" in said[0]["text"]
    assert code == 0  # a warning, not a problem


@pytest.mark.long
@pytest.mark.timeout(90)
def test_a_full_cache_is_named_oom_and_writes_resume_within_5_s_once_memory_is_freed(
    own_redis_server: RedisServer, processes: Spawned, tmp_path: Path
) -> None:
    admin = own_redis_server.client()
    with FakeTradovate(numbered_desk(2, 1), token_lifetime_s=600) as fake:
        env = daemon_env(fake, own_redis_server.url, ORCA_HEALTH_ADDR="")
        daemon = processes.start(env, cwd=str(tmp_path))
        names = all_names(fake)
        wait_for(lambda: all_live(admin, names, fake), what="every token live")
        assert daemon.event("redis.eviction_policy")["policy"] == "noeviction"
        admin.delete("token:LOGIN_0000")  # the daemon writes it back, once it can
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", used - 100_000)  # full: every write is refused
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            admin.set("filler", "x")
        down = daemon.event("redis.down", timeout=10)
        assert down["reason"] == "oom"
        assert "noeviction" in down["hint"]
        assert admin.get("token:LOGIN_0000") is None
        admin.config_set("maxmemory", 0)  # memory freed
        freed_at = time.monotonic()
        wait_for(lambda: all_live(admin, names, fake), timeout=5, what="the token written back")
        assert time.monotonic() - freed_at <= 5
        assert all(fake.seen.sessions_opened[login] == 1 for login in fake.users)


def test_evicted_keys_are_exported_and_a_policy_that_evicts_ours_is_said_once(
    own_redis_server: RedisServer,
) -> None:
    admin = own_redis_server.client()
    admin.config_set("maxmemory-policy", "volatile-lru")
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 300_000)
    for n in range(2_000):  # more than fits: the oldest with a TTL are evicted
        admin.set(f"token:N{n}", "x" * 1_000, ex=600)
    metrics = Metrics()
    components = SimpleNamespace(
        redis=admin, metrics=metrics, redis_health=RedisHealth("test", metrics)
    )
    watch = MemoryWatch(components)  # type: ignore[arg-type]  # what it reads of Components
    with capture_logs() as logs:
        watch.check()
        watch.check()
    evicted = metrics.registry.get_sample_value("orca_redis_evicted_keys")
    assert evicted is not None
    assert evicted == int(admin.info("stats")["evicted_keys"]) > 0
    said = [e for e in logs if e["event"] == "redis.eviction_policy"]
    assert len(said) == 1
    assert (said[0]["log_level"], said[0]["policy"]) == ("warning", "volatile-lru")


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    """A Redis with a password (Azure's first access key), and the file that holds it."""
    require_redis_server()
    (tmp_path / "redis").mkdir()
    password_file = tmp_path / "redis_password"
    password_file.write_text("first-Key-1\n")
    with RedisServer(workdir=tmp_path / "redis", password="first-Key-1") as server:
        yield server, password_file


def rotation_env(fake: FakeTradovate, server: RedisServer, password_file: Path) -> dict[str, str]:
    return daemon_env(
        fake,
        None,
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(server.port),
        REDIS_PASSWORD_FILE=str(password_file),
        ORCA_HEALTH_ADDR="",
    )


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "after_s",
    [pytest.param(30, marks=pytest.mark.long), pytest.param(60, marks=pytest.mark.soak)],
    ids=["a-token-lifetime", "60s"],
)
def test_a_rotated_key_needs_no_restart_and_loses_no_sample(
    keyed: tuple[RedisServer, Path], tmp_path: Path, processes: Spawned, after_s: int
) -> None:
    """Azure's rotation: the second key added, the file rewritten, the first key removed and
    every connection closed. No restart, no missing sample, no session, auth at most 2 s."""
    server, password_file = keyed
    with FakeTradovate(numbered_desk(3, 1), token_lifetime_s=TOKEN_LIFETIME_S) as fake:
        daemon = processes.start(rotation_env(fake, server, password_file), cwd=str(tmp_path))
        admin = server.client()
        names, logins = all_names(fake), list(fake.users)
        wait_for(lambda: all_live(admin, names, fake), what="every token live")

        def reader() -> redis.Redis:  # a trading program that reads the same file
            credentials = FileCredentials(str(password_file), username=None, url=False)
            options = {"host": "127.0.0.1", "port": server.port, "decode_responses": True}
            return redis.Redis(credential_provider=credentials, **options)  # type: ignore[arg-type]

        sampler = TokenSampler(reader, names, fake.is_live, every_s=0.25).start()
        admin.acl_setuser("default", enabled=True, passwords=["+second-Key-2"])  # both valid
        password_file.write_text("second-Key-2\n")
        admin.acl_setuser("default", enabled=True, passwords=["-first-Key-1"])
        server.password = "second-Key-2"
        admin = server.client()
        admin.client_kill_filter(_type="normal", skipme=True)  # Azure closes them
        _wait(after_s)  # a token lifetime or two: every login renewed, every key written again
        samples = sampler.stop()
        assert daemon.process.poll() is None
        assert (samples.missing, samples.stale, samples.unreadable) == (0, 0, 0), samples
        assert all(fake.seen.sessions_opened[login] == 1 for login in logins)
        assert all_live(admin, names, fake)
        downs = [e for e in daemon.events() if e["event"] == "redis.down"]
        assert all(e["reason"] != "auth" for e in downs), downs
        assert "Key-" not in "\n".join(daemon.lines)


@pytest.mark.timeout(60)
def test_a_wrong_new_key_is_named_auth_with_its_file_never_its_value(
    keyed: tuple[RedisServer, Path], tmp_path: Path, processes: Spawned
) -> None:
    server, password_file = keyed
    with FakeTradovate(numbered_desk(1, 1)) as fake:
        daemon = processes.start(rotation_env(fake, server, password_file), cwd=str(tmp_path))
        admin = server.client()
        wait_for(lambda: all_live(admin, all_names(fake), fake), what="every token live")
        password_file.write_text("wrong-Key-9\n")
        daemon.signal(signal.SIGHUP)  # read again: the idle connections go
        admin.client_kill_filter(_type="normal", skipme=True)
        down = daemon.event("redis.down", timeout=10)
        assert down["reason"] == "auth"
        assert str(password_file) in down["hint"]
        assert "wrong-Key-9" not in "\n".join(daemon.lines)
        assert daemon.event("redis.credentials_reread")["credentials"].endswith("redis_password")
        password_file.write_text("first-Key-1\n")  # put right: back without a restart
        wait_for(lambda: daemon.event("redis.up") and _up_again(daemon), timeout=10, what="up")
        assert daemon.process.poll() is None


def _up_again(daemon: DaemonProcess) -> bool:
    events = [e["event"] for e in daemon.events()]
    return "redis.down" in events and events[::-1].index("redis.up") < events[::-1].index(
        "redis.down"
    )


def test_doctor_names_a_cluster_behind_one_endpoint_that_refuses_the_fenced_write(
    redis_cluster: list[RedisServer], cli: Callable[[dict[str, str]], Run]
) -> None:
    """Azure Managed Redis's Enterprise policy answers CROSSSLOT to a script over keys of
    several slots, as a cluster node does to a client that is not a cluster client."""
    with FakeTradovate(numbered_desk(1, 1)) as fake:
        code, out, _ = cli(daemon_env(fake, redis_cluster[0].url))("doctor", "--json")
    findings = json.loads(out)["findings"]
    crossslot = [f for f in findings if "CROSSSLOT" in f["text"]]
    assert crossslot, findings
    assert crossslot[0]["level"] == "problem"
    assert "REDIS_CLUSTER=true" in crossslot[0]["text"]
    assert code == 1
    with FakeTradovate(numbered_desk(1, 1)) as fake:
        env = daemon_env(fake, redis_cluster[0].url, REDIS_CLUSTER="true")
        code, out, _ = cli(env)("doctor", "--json")
    assert not [f for f in json.loads(out)["findings"] if "CROSSSLOT" in f["text"]]


@pytest.mark.soak
@pytest.mark.timeout(300)
def test_20_logins_on_one_24_draw_no_ticket_with_every_budget_key_evicted_each_second(
    redis_server: RedisServer, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """volatile-lru at its worst for the budgets: every `orca:budget:*` key deleted each second
    for two budget windows (80-second tokens on the simulator's 60 s hour). No penalty ticket,
    no extra session."""
    with FakeTradovate(numbered_desk(20, 1), token_lifetime_s=80) as fake:
        env = daemon_env(fake, redis_server.url, ORCA_AUTH_RATE_LIMIT="100000")
        daemon = start_daemon(env)
        client = redis_server.client()
        wait_for(lambda: all_live(client, all_names(fake)[:34], fake), what="first tokens")
        stop = threading.Event()

        def evict() -> None:
            while not stop.wait(1.0):
                keys = list(client.scan_iter("orca:budget:*"))
                if keys:
                    client.delete(*keys)

        evictor = threading.Thread(target=evict, daemon=True)
        evictor.start()
        _wait(2 * fake.budget_window_s)
        stop.set()
        evictor.join()
        assert sum(fake.seen.penalties.values()) == 0
        assert all(fake.seen.sessions_opened[login] == 1 for login in fake.users)
        assert daemon.process.poll() is None
