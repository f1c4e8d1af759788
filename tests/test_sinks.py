"""The queue-and-thread that alerts and token history share."""

from __future__ import annotations

import threading

from daemon.sinks.background import BackgroundSink


class Gated(BackgroundSink[int]):
    """Delivers only once the gate opens, so its queue can be filled."""

    def __init__(self, maxsize: int) -> None:
        self.gate = threading.Event()
        self.delivered: list[int] = []
        self.closed_after: list[int] | None = None
        super().__init__("gated", maxsize)

    def deliver(self, item: int) -> None:
        self.gate.wait(5)
        self.delivered.append(item)

    def closed(self) -> None:
        self.closed_after = list(self.delivered)


def test_a_full_queue_drops_and_close_still_delivers_what_was_queued() -> None:
    sink = Gated(maxsize=2)
    queued = [sink._queue_item(n) for n in range(5)]  # one is taken at once, two wait
    assert queued.count(False) >= 2  # dropped, never blocking
    sink.gate.set()
    sink.close(timeout=5)
    # The queue was full when close began: it still waits for what was queued (audit once
    # returned at once here, losing its records).
    assert sink.delivered == [n for n, ok in enumerate(queued) if ok]
    assert sink.closed_after == sink.delivered


def test_close_is_bounded_when_delivery_hangs() -> None:
    sink = Gated(maxsize=1)
    sink._queue_item(1)
    sink.close(timeout=0.2)  # the gate never opens: close returns on its timeout
    assert sink.delivered == []
    assert sink.closed_after == []
    sink.gate.set()
