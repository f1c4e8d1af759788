"""Connections that leave a node which can no longer take writes. After a failover (Azure Cache
for Redis patches monthly) a connection kept open through a load balancer, or to a pinned
address, may still reach the demoted primary, which answers `READONLY` to every write; a replica
that lost its primary answers `MASTERDOWN`, one loading its data `LOADING`. redis-py raises them
as plain response errors: it neither retries them nor drops the connection, so it would stay on
the wrong node for good. Here any such answer marks its connection, and the pool disconnects a
marked connection when it comes back, whatever path the answer took (a command, a pipeline run
with `raise_on_error=False`, a transaction): the next command connects afresh, through the
load balancer, to whichever node is primary now. `WRONG_NODE_ERRORS` are also retried, inside
the command's deadline, by the one retry layer (`daemon.store.client.BoundedRetry`)."""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import BusyLoadingError, MasterDownError, ReadOnlyError

WRONG_NODE_ERRORS: tuple[type[redis.RedisError], ...] = (
    ReadOnlyError,
    MasterDownError,
    BusyLoadingError,
)


class _LeavesWrongNode:
    """Marks the connection when the server answers that it is the wrong node."""

    wrong_node = False

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]  # a mixin
        except WRONG_NODE_ERRORS:
            self.wrong_node = True
            raise


class Connection(_LeavesWrongNode, redis.Connection):
    pass


class SSLConnection(_LeavesWrongNode, redis.SSLConnection):
    pass


class ConnectionPool(redis.BlockingConnectionPool):
    """A blocking pool (concurrent refreshes wait for a free connection instead of failing)
    that disconnects a connection which met the wrong node before handing it out again."""

    def release(self, connection: Any) -> None:
        if getattr(connection, "wrong_node", False):
            connection.wrong_node = False
            connection.disconnect()
        super().release(connection)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
