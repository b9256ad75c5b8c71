"""sd_notify against a real unix datagram socket, as systemd would listen."""

from __future__ import annotations

import asyncio
import os
import socket

from punchgate.gateway.sdnotify import SystemdNotifier
from tests.support.waiting import wait_for_async


def test_messages_arrive(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("reading 3 terminals")
    assert sock.recv(4096) == b"READY=1\nSTATUS=reading 3 terminals"
    assert notifier.status("2 pending")
    assert sock.recv(4096) == b"STATUS=2 pending"
    assert notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_socket() -> None:
    name = f"punchgate-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_without_systemd_everything_is_a_noop() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval is None


def test_watchdog_interval_is_half_and_respects_pid() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "4000000"}
    assert SystemdNotifier(env).watchdog_interval == 2.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 2.0
    assert SystemdNotifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None


async def test_watchdog_pings_from_the_loop_and_stop_when_it_blocks(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    sock.setblocking(False)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})  # ping every 50 ms
    task = asyncio.create_task(notifier.run_watchdog())
    pings: list[bytes] = []

    def three_pings() -> bool:
        pings.extend(_drain(sock))
        return pings.count(b"WATCHDOG=1") >= 3

    assert await wait_for_async(three_pings, timeout=30)  # the deadline only bounds a failure
    # A blocked event loop sends nothing: that is what lets systemd notice and restart us.
    import time

    _drain(sock)  # nothing awaited since: the loop cannot have sent more meanwhile
    time.sleep(0.3)  # noqa: ASYNC251  (blocking the loop on purpose)
    assert _drain(sock) == []
    task.cancel()


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(100))
        except BlockingIOError:
            return out


def test_a_listener_that_stops_reading_never_blocks_the_sender(
    notify_socket: tuple[socket.socket, str],
) -> None:
    _, path = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    # Nobody reads: the socket's queue fills up. Every call still returns at once.
    results = [notifier.status(f"line {i}") for i in range(2000)]
    assert results[0] is True
    assert results[-1] is False  # dropped, not blocked
