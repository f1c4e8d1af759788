"""A queue and a thread of its own: what alerts and token history share. Queuing never blocks
(a full queue drops, and says so), and closing delivers what is queued within a bound."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Generic, TypeVar

Item = TypeVar("Item")


class BackgroundSink(Generic[Item]):
    """Subclasses say how one item is delivered (`deliver`, on the sink's thread) and what to
    let go of when the thread ends (`finished`) or the sink is closed (`closed`)."""

    def __init__(self, name: str, maxsize: int) -> None:
        self._queue: queue.Queue[Item | None] = queue.Queue(maxsize=maxsize)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _queue_item(self, item: Item) -> bool:
        """Queue an item without waiting; False when the queue is full (the item is dropped)."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            return False
        return True

    def close(self, timeout: float) -> None:
        """Deliver what is queued, within `timeout`, then stop."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):  # a full queue makes room as it is delivered
            self._queue.put(None, timeout=timeout)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        self.closed()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self.deliver(item)
        self.finished()

    def deliver(self, item: Item) -> None:
        raise NotImplementedError

    def finished(self) -> None:
        """On the sink's thread, after the last item."""

    def closed(self) -> None:
        """On the closing thread, once the sink's thread ended or the timeout ran out."""
