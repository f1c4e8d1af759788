"""`price.Publisher`, the feed's writer: stores sent without waiting, their answers read at
`settle`, against a real redis-server that refuses, fails over and restarts."""

from __future__ import annotations

import json

import pytest
import redis

from daemon import price
from daemon.config import load_redis_settings
from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from daemon.store.client import build_client
from tests.helpers import QUOTE


def daemon_client(url: str, **env: str) -> redis.Redis:
    """A client as the daemon builds its shared one: its pool, its connection classes."""
    return build_client(load_redis_settings({"REDIS_URL": url, **env}))


def test_stores_reach_the_key_and_the_channel_and_their_answers_are_read_at_settle(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(price, "MAX_UNREAD_ANSWERS", 10)
    client = daemon_client(redis_server.url)
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("price:MNQZ6")
    publisher = price.Publisher(client)
    one_price = {**QUOTE, "Timestamp": 1}
    for stamp in range(1, 21):  # a root's price under two names: 4 answers a store
        publisher.store_many({"MNQZ6": {**QUOTE, "Timestamp": stamp}, "MNQ": one_price})
        assert publisher.unread <= 10
    publisher.settle()
    assert publisher.unread == 0
    stamps: list[int] = []
    while len(stamps) < 20:
        message = wait_for(lambda: listener.get_message(timeout=0.1), what="each price")
        stamps.append(json.loads(message["data"])["Timestamp"])
    assert stamps == list(range(1, 21))
    assert price.latest("MNQZ6", client=client) == {**QUOTE, "Timestamp": 20}
    assert price.latest("MNQ", client=client) == one_price
    assert client.ttl("price:MNQ:latest") == 5
    publisher.close()


def test_a_refused_write_is_raised_at_settle_and_the_next_store_goes_on(
    own_redis_server: RedisServer,
) -> None:
    admin = own_redis_server.client()
    admin.acl_setuser(
        "feedless", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-publish"]
    )
    url = f"redis://feedless:pw@127.0.0.1:{own_redis_server.port}"
    publisher = price.Publisher(daemon_client(url))
    publisher.store_many({"MNQZ6": {**QUOTE, "Timestamp": 1}})  # sent: nothing read yet
    with pytest.raises(redis.exceptions.NoPermissionError):
        publisher.settle()
    assert json.loads(admin.get("price:MNQZ6:latest") or "{}")["Timestamp"] == 1
    publisher.store_many({"MNQZ6": {**QUOTE, "Timestamp": 2}})
    with pytest.raises(redis.exceptions.NoPermissionError):
        publisher.settle()
    assert json.loads(admin.get("price:MNQZ6:latest") or "{}")["Timestamp"] == 2


def test_a_demoted_primary_is_left_and_the_next_store_reaches_the_new_one(
    own_redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An Azure failover as a kept connection sees it: the old primary answers READONLY."""
    with RedisServer(workdir=tmp_path_factory.mktemp("other")) as other:
        admin = own_redis_server.client()
        publisher = price.Publisher(daemon_client(own_redis_server.url))
        publisher.store_many({"MNQZ6": {**QUOTE, "Timestamp": 1}})
        publisher.settle()
        admin.replicaof("127.0.0.1", other.port)
        publisher.store_many({"MNQZ6": {**QUOTE, "Timestamp": 2}})
        with pytest.raises(redis.exceptions.ReadOnlyError):
            publisher.settle()
        connections = admin.info("stats")["total_connections_received"]
        admin.replicaof("NO", "ONE")
        publisher.store_many({"MNQZ6": {**QUOTE, "Timestamp": 3}})
        publisher.settle()
        assert price.latest("MNQZ6", client=admin) == {**QUOTE, "Timestamp": 3}
        # On a fresh connection: one kept open would still reach the demoted node.
        assert admin.info("stats")["total_connections_received"] == connections + 1


def test_a_restarted_redis_fails_one_store_and_the_next_connects_afresh(
    own_redis_server: RedisServer,
) -> None:
    publisher = price.Publisher(daemon_client(own_redis_server.url))
    publisher.store_many({"MNQZ6": {**QUOTE, "Timestamp": 1}})
    publisher.settle()
    own_redis_server.restart()  # SIGKILL, then empty on the same port

    def stored_again() -> bool:
        try:
            publisher.store_many({"MNQZ6": {**QUOTE, "Timestamp": 2}})
            publisher.settle()
        except redis.ConnectionError:
            return False
        return True

    wait_for(stored_again, what="a store on a fresh connection")
    assert price.latest("MNQZ6", client=own_redis_server.client()) == {**QUOTE, "Timestamp": 2}


def test_on_a_cluster_each_store_is_a_store_many(redis_cluster: list[RedisServer]) -> None:
    client = daemon_client(f"redis://127.0.0.1:{redis_cluster[0].port}/0", REDIS_CLUSTER="true")
    publisher = price.Publisher(client)
    names = {f"SYM{n}": {**QUOTE, "Timestamp": n} for n in range(20)}
    publisher.store_many(names)
    publisher.settle()
    for name, stored in names.items():
        assert price.latest(name, client=client) == stored
