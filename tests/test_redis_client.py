"""The shared pool against real redis-server instances: plain, and TLS with a password."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis

from daemon.config import load_redis_settings
from daemon.constants import REDIS_HEALTH_CHECK_INTERVAL_S
from daemon.sim.redis_server import RedisServer
from daemon.store.client import close_redis_client, get_redis_client
from daemon.store.status import LoginStatus
from daemon.store.tokens import TokenSet, write_login_tokens
from tests.helpers import REDIS_PASSWORD, make_jwt


def test_one_shared_client_from_the_environment(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    client = get_redis_client()
    assert client is get_redis_client()
    assert client.ping() is True
    pool = client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == 10
    kwargs = pool.connection_kwargs
    assert kwargs["socket_keepalive"] is True
    # Set, not left to the installed redis-py (2 hours of idle on 5.x and 6.x).
    assert kwargs["socket_keepalive_options"] == {
        socket.TCP_KEEPIDLE: 30,
        socket.TCP_KEEPINTVL: 5,
        socket.TCP_KEEPCNT: 3,
    }
    assert kwargs["protocol"] == 2  # no RESP3 maintenance notifications stretching deadlines
    assert kwargs["health_check_interval"] == REDIS_HEALTH_CHECK_INTERVAL_S < 600
    assert kwargs["decode_responses"] is True
    assert kwargs["retry"] is not None
    close_redis_client()
    assert get_redis_client() is not client


def test_tls_with_password_and_ca_by_fields(redis_tls_server: RedisServer) -> None:
    assert redis_tls_server.tls is not None
    settings = load_redis_settings(
        {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis_tls_server.port),
            "REDIS_SSL": "true",
            "REDIS_PASSWORD": REDIS_PASSWORD,
            "REDIS_SSL_CA_CERTS": str(redis_tls_server.tls.ca_cert),
        }
    )
    client = get_redis_client(settings)
    client.set("token:APEX_1", "x", ex=5)
    assert client.get("token:APEX_1") == "x"


def test_tls_with_a_rediss_url(redis_tls_server: RedisServer) -> None:
    assert redis_tls_server.tls is not None
    settings = load_redis_settings(
        {"REDIS_URL": redis_tls_server.url, "REDIS_SSL_CA_CERTS": str(redis_tls_server.tls.ca_cert)}
    )
    assert get_redis_client(settings).ping() is True


def test_tls_is_verified_by_default(redis_tls_server: RedisServer) -> None:
    settings = load_redis_settings({"REDIS_URL": redis_tls_server.url})  # system CA store only
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        get_redis_client(settings).ping()


def test_verification_can_be_turned_off_explicitly(redis_tls_server: RedisServer) -> None:
    settings = load_redis_settings(
        {"REDIS_URL": redis_tls_server.url, "REDIS_SSL_CERT_REQS": "none"}
    )
    assert get_redis_client(settings).ping() is True


def test_wrong_password_is_a_clear_error(redis_tls_server: RedisServer) -> None:
    assert redis_tls_server.tls is not None
    url = redis_tls_server.url.replace(REDIS_PASSWORD, "wrong-pass")
    settings = load_redis_settings(
        {"REDIS_URL": url, "REDIS_SSL_CA_CERTS": str(redis_tls_server.tls.ca_cert)}
    )
    with pytest.raises(redis.AuthenticationError) as caught:
        get_redis_client(settings).ping()
    assert "wrong-pass" not in str(caught.value)


def test_blocking_pool_makes_callers_wait_instead_of_failing(redis_server: RedisServer) -> None:
    settings = load_redis_settings({"REDIS_URL": redis_server.url, "REDIS_MAX_CONNECTIONS": "2"})
    client = get_redis_client(settings)
    errors: list[BaseException] = []

    def slow_command() -> None:
        try:
            client.blpop(["orca:test:never"], timeout=0.2)
        except BaseException as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=slow_command) for _ in range(6)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert time.monotonic() - started >= 0.55  # three rounds of two: they queued for the pool


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: redis.connection.AbstractConnection, *args: object, **kw: object) -> None:
        sent.append(1)
        original(self, *args, **kw)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


def test_a_login_is_written_in_one_round_trip(
    redis_server: RedisServer, round_trips: list[int]
) -> None:
    client = redis_server.client()
    client.ping()  # connect (and its handshake) before counting
    round_trips.clear()
    now = time.time()
    tokens = TokenSet(
        login="APEX_1",
        access_token=make_jwt(now + 5_400),
        md_access_token=make_jwt(now + 5_400),
        expires_at=now + 5_400,
        lifetime_s=5_400,
        accounts=tuple(f"PA{n}" for n in range(5)),
    )
    write_login_tokens(client, tokens, now=now, max_ttl_s=18_000, status=LoginStatus("APEX_1"))
    assert len(round_trips) == 1
    assert len(client.keys("token:*")) == 6
    assert len(client.keys("mdtoken:*")) == 6


def test_common_operations_of_the_reference_on_the_shared_client(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.store.client import scan_batches

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    r = get_redis_client()
    r.set("persistent:config", "some_value")
    assert r.ttl("persistent:config") == -1
    r.expire("persistent:config", 3600)
    assert r.type("persistent:config") == "string"
    assert r.incr("counter:api_calls") == 1
    assert r.incrby("counter:api_calls", 10) == 11
    for n in range(2_500):
        r.set(f"hft:positions:PA{n}:all", "{}", ex=60)
    batches = list(scan_batches(r, "hft:positions:*", batch=1_000))
    assert sum(len(b) for b in batches) == 2_500
    assert max(len(b) for b in batches) <= 1_100  # SCAN's COUNT is a hint; lists stay bounded


@pytest.mark.parametrize("health_check_interval", [REDIS_HEALTH_CHECK_INTERVAL_S, 0])
def test_the_library_survives_a_server_that_closes_idle_connections(
    own_redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    health_check_interval: int,
) -> None:
    """Azure closes connections idle for 10 minutes; a trading program reading a token now and
    then meets that (here: Redis `timeout 1`, and a connection killed while idle). No error
    reaches the caller, whatever the health-check interval."""
    from daemon import tokens
    from daemon.store import client as shared

    monkeypatch.setattr(shared, "REDIS_HEALTH_CHECK_INTERVAL_S", health_check_interval)
    admin = own_redis_server.client()
    admin.set("token:APEX_1", "t-1")
    library = shared.build_client(load_redis_settings({"REDIS_URL": own_redis_server.url}))
    assert tokens.get_token("APEX_1", client=library) == "t-1"

    def connected() -> int:
        return sum(1 for c in admin.client_list() if c["name"] == "orca-token-daemon:main")

    assert connected() == 1
    admin.config_set("timeout", 1)  # the server closes a connection idle for a second
    deadline = time.monotonic() + 10
    while connected() and time.monotonic() < deadline:  # polled: the server's own clock
        time.sleep(0.1)
    assert connected() == 0
    assert tokens.get_token("APEX_1", client=library) == "t-1"
    admin.config_set("timeout", 0)
    admin.client_kill_filter(_type="normal", skipme=True)  # killed while idle
    admin = own_redis_server.client()
    assert tokens.get_token("APEX_1", client=library) == "t-1"
    library.close()
