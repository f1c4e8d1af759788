"""Fixtures: global state reset around every test, real redis-server instances (plain and TLS
with a password and a throwaway CA), and the simulated Tradovate."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest
import structlog

from daemon.cli import main
from daemon.logs import forget_secrets
from daemon.sim.redis_server import RedisServer, TlsFiles
from daemon.sim.tradovate import FakeTradovate
from daemon.store.client import close_redis_client
from daemon.store.foreign import forget_reports
from tests.helpers import (
    REDIS_PASSWORD,
    DaemonProcess,
    Run,
    Spawned,
    StartDaemon,
    require_redis_server,
    user,
)

# A test using one of these starts a process or a real server: it is end-to-end (`e2e`), run by
# `make test` and left out of `make unit`. Tests that read the wall clock without them are
# marked `e2e` by hand.
E2E_FIXTURES = frozenset(
    {
        "redis_server",
        "own_redis_server",
        "redis_tls_server",
        "redis_cluster",
        "served_tradovate",
        "processes",
        "start_daemon",
        "postgres_dsn",
        "hostile",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    items[:] = long_first_on_every_worker(items)


def long_first_on_every_worker(items: list[pytest.Item]) -> list[pytest.Item]:
    """`--dist worksteal` gives each worker a contiguous share of the collection and lets idle
    ones steal from the ends of the others' shares. Each share here starts with its part of the
    `long` tests, so they begin at once, one per worker, and the run ends on short tests."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    long = [item for item in items if item.get_closest_marker("long")]
    rest = [item for item in items if not item.get_closest_marker("long")]
    ordered: list[pytest.Item] = []
    left = len(items)
    for worker in range(workers):
        share = left // (workers - worker)  # as worksteal sizes its first shares
        heads = long[worker::workers]
        ordered += heads + rest[: share - len(heads)]
        del rest[: share - len(heads)]
        left -= share
    return ordered + rest


LONGEST_TEST_S = 60.0  # `make test` stays fast: a longer real-time run belongs in `make soak`


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    too_long = report.when == "call" and report.passed and report.duration > LONGEST_TEST_S
    if too_long and item.get_closest_marker("soak") is None:
        report.outcome = "failed"
        report.longrepr = (
            f"took {report.duration:.0f} s, over the {LONGEST_TEST_S:.0f} s a test of make test"
            " may take: shorten it, run it on an injected clock, or mark it soak"
        )
    return report


@pytest.fixture(autouse=True)
def _reset_global_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no shared pool, no registered secrets, no foreign value said and
    default logging."""
    for name in list(os.environ):
        if name.startswith(("ORCA_", "REDIS_", "TRADOVATE_")) or name in ("NOTIFY_SOCKET",):
            monkeypatch.delenv(name)
    yield
    close_redis_client()
    forget_secrets()
    forget_reports()
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    logging.captureWarnings(False)  # configure_logging turns it on; pytest swaps showwarning


@pytest.fixture(scope="session")
def _shared_redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisServer, dict[str, str]]]:
    require_redis_server()
    with (
        RedisServer(workdir=tmp_path_factory.mktemp("shared-redis")) as server,
        server.client() as admin,
    ):
        yield server, admin.config_get("*")


@pytest.fixture
def redis_server(
    _shared_redis_server: tuple[RedisServer, dict[str, str]],
) -> Iterator[RedisServer]:
    """A plain redis-server on a free loopback port, shared by the tests of one worker (one at a
    time) and emptied before each: its clients, keys and scripts. A test that stops, pauses,
    reconfigures or restarts Redis takes `own_redis_server` instead; one that did so here fails."""
    server, configuration = _shared_redis_server
    with server.client() as admin:
        admin.client_kill_filter(_type="normal", skipme=True)
        admin.client_kill_filter(_type="pubsub", skipme=True)
        admin.flushall()
        admin.script_flush()
    yield server
    with server.client(socket_timeout=2) as admin:
        assert admin.config_get("*") == configuration, "reconfigured: take own_redis_server"
        assert admin.acl_users() == ["default"], "ACL users added: take own_redis_server"


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A plain redis-server of this test's own, for a test that stops or reconfigures it."""
    require_redis_server()
    with RedisServer(workdir=tmp_path) as server:
        yield server


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "orca test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture
def redis_tls_server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[RedisServer]:
    """What Azure Cache for Redis looks like: TLS only, with a password."""
    require_redis_server()
    with RedisServer(workdir=tmp_path, tls=tls_files, password=REDIS_PASSWORD) as server:
        yield server


@pytest.fixture
def fake_tradovate() -> FakeTradovate:
    """The simulator with two logins, answered through respx (no socket)."""
    return FakeTradovate([user("APEX_1", accounts=2), user("APEX_2", accounts=3)])


@pytest.fixture
def served_tradovate() -> Iterator[FakeTradovate]:
    """The reference desk (4 logins, 13 accounts) served over HTTP on 127.0.0.1."""
    with FakeTradovate() as fake:
        yield fake


POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A schema of this test's own in the machine's PostgreSQL (trust auth, database test)."""
    import secrets

    try:
        import psycopg

        admin = psycopg.connect(POSTGRES_URL, connect_timeout=3, autocommit=True)
    except Exception as error:  # psycopg missing or PostgreSQL down: both named below
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable: {error}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}: the sync tests must not be skipped under CI=true")
        pytest.skip(message)
    schema = f"orca_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[[dict[str, str]], Run]:
    """cli(env)(*argv) -> (exit code, stdout, stderr): main() as the console script runs it."""
    monkeypatch.chdir(tmp_path)

    def with_env(env: dict[str, str]) -> Run:
        def run(*argv: str) -> tuple[int, str, str]:
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            capsys.readouterr()
            try:
                code = main(list(argv))
            except SystemExit as exit_:  # argparse's usage errors
                code = int(exit_.code or 0)
            out, err = capsys.readouterr()
            return code, out, err

        return run

    return with_env


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three redis-server primaries joined into a Redis Cluster."""
    from daemon.sim.redis_server import redis_cluster

    require_redis_server()
    with redis_cluster(tmp_path) as nodes:
        yield nodes


@pytest.fixture
def processes() -> Iterator[Spawned]:
    """Daemon subprocesses a test starts; whatever still runs is killed afterwards."""
    started = Spawned()
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def start_daemon(processes: Spawned, tmp_path: Path) -> StartDaemon:
    """start_daemon(env, *args): `python -m daemon` with those arguments (`run` when none) in
    this test's folder, its JSON log lines collected; killed afterwards if still running."""

    def start(
        env: Mapping[str, str], *args: str, cwd: Path | None = None, exe: str | None = None
    ) -> DaemonProcess:
        return processes.start(env, *args, cwd=str(cwd or tmp_path), exe=exe)

    return start
