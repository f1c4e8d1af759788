from __future__ import annotations

import os
import socket
from pathlib import Path

from daemon.service.systemd import Notifier


def test_disabled_without_notify_socket() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert notifier.notify("READY=1") is False
    assert notifier.watchdog_interval_s is None


def test_sends_datagrams_and_halves_the_watchdog_interval(tmp_path: Path) -> None:
    address = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        notifier = Notifier(environ={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000"})
        assert notifier.watchdog_interval_s == 15
        assert notifier.notify("READY=1")
        assert sock.recv(64) == b"READY=1"


def test_abstract_socket_address() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        name = f"orca-test-{os.getpid()}"
        sock.bind("\0" + name)
        assert Notifier(environ={"NOTIFY_SOCKET": "@" + name}).notify("WATCHDOG=1")
        assert sock.recv(64) == b"WATCHDOG=1"


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    notifier = Notifier(
        environ={"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    )
    assert notifier.watchdog_interval_s is None


def test_unreachable_socket_is_not_fatal(tmp_path: Path) -> None:
    assert Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}).notify("READY=1") is False
