from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import fakeredis
import pytest

from daemon import price
from daemon.sim.environment import wait_for
from daemon.sim.redis_server import RedisServer
from tests.helpers import QUOTE


def test_store_sets_for_5_seconds_and_publishes_the_same_json() -> None:
    store = fakeredis.FakeRedis(decode_responses=True)
    listener = store.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("price:MNQZ5")
    price.store("MNQZ5", {**QUOTE, "Timestamp": 1}, client=store)
    assert store.ttl("price:MNQZ5:latest") == 5
    message = wait_for(lambda: listener.get_message(timeout=0.1), what="the published price")
    assert json.loads(message["data"]) == {**QUOTE, "Timestamp": 1}
    assert price.latest("MNQZ5", client=store) == {**QUOTE, "Timestamp": 1}


def test_timestamp_is_added_in_milliseconds() -> None:
    store = fakeredis.FakeRedis(decode_responses=True)
    price.store("MESZ5", QUOTE, client=store)
    latest = price.latest("MESZ5", client=store)
    assert latest is not None
    assert latest["Timestamp"] > 1_700_000_000_000


def test_many_prices_in_one_pipeline() -> None:
    store = fakeredis.FakeRedis(decode_responses=True)
    price.store_many({f"SYM{n}": {**QUOTE, "Timestamp": n} for n in range(100)}, client=store)
    assert len(store.keys("price:*:latest")) == 100


def test_bad_symbols_are_refused() -> None:
    with pytest.raises(ValueError, match="symbol"):
        price.store("MNQ:Z5", QUOTE, client=fakeredis.FakeRedis())


class Follower:
    """price.stream() in a thread, collecting what it yields."""

    def __init__(self, client: object, symbol: str, poll_s: float) -> None:
        self.updates: list[dict[str, object]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._follow, args=(client, symbol, poll_s), daemon=True
        )
        self.thread.start()

    def _follow(self, client: object, symbol: str, poll_s: float) -> None:
        for update in price.stream(symbol, client=client, stop=self.stop, poll_s=poll_s):  # type: ignore[arg-type]
            self.updates.append(update)

    def timestamps(self) -> list[object]:
        return [u.get("Timestamp") for u in self.updates]


@pytest.fixture
def follower_factory() -> Iterator[list[Follower]]:
    followers: list[Follower] = []
    yield followers
    for follower in followers:
        follower.stop.set()
        follower.thread.join(5)


def test_stream_pushes_updates_and_survives_a_redis_restart(
    own_redis_server: RedisServer, follower_factory: list[Follower]
) -> None:
    reader = own_redis_server.client(socket_timeout=2, socket_connect_timeout=1)
    writer = own_redis_server.client()
    follower = Follower(reader, "MNQZ5", poll_s=0.5)  # below the reader's socket timeout
    follower_factory.append(follower)
    wait_for(lambda: writer.pubsub_numsub("price:MNQZ5")[0][1] == 1, what="the subscription")
    for n in range(1, 4):  # published only: no latest key a poll could find, so these are pushes
        writer.publish("price:MNQZ5", json.dumps({**QUOTE, "Timestamp": n}))
    wait_for(lambda: follower.timestamps() == [1, 2, 3], what="three pushed updates")

    own_redis_server.restart()
    writer = own_redis_server.client()
    wait_for(
        lambda: writer.pubsub_numsub("price:MNQZ5")[0][1] == 1,
        timeout=15,
        what="the stream to resubscribe",
    )
    price.store("MNQZ5", {**QUOTE, "Timestamp": 4}, client=writer)
    wait_for(lambda: follower.timestamps()[-1:] == [4], what="an update after the restart")
    assert follower.timestamps() == [1, 2, 3, 4]  # each Timestamp once, in order


def test_stream_falls_back_to_polling_a_writer_that_only_sets(
    redis_server: RedisServer, follower_factory: list[Follower]
) -> None:
    client = redis_server.client()
    follower = Follower(client, "MESZ5", poll_s=0.2)
    follower_factory.append(follower)
    client.set("price:MESZ5:latest", json.dumps({**QUOTE, "Timestamp": 7}), ex=5)
    wait_for(lambda: follower.timestamps() == [7], what="the polled update")


def test_stream_never_goes_back_in_time() -> None:
    assert price._newer(2, 1)
    assert not price._newer(1, 3)
    assert not price._newer(3, 3)
    assert price._newer(1, None)
    assert price._newer("b", "a")
