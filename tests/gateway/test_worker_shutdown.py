"""A worker stops when cancelled, even when its cleanup fails as the terminal goes away.

Seen in CI: the test cancelled a live worker and stopped the emulator; unregistering the live
stream then failed ("the terminal closed the connection"), that error replaced the
cancellation, and the worker took it for one more failed session and carried on retrying.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncGenerator
from typing import cast

from punchgate.drivers.base import DeviceInfo, Driver, RawPunch, UnreachableError
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.gateway.health import DeviceHealth
from punchgate.gateway.worker import DeviceWorker
from punchgate.gateway.worker_failures import Backoff
from punchgate.sync.store import Store
from tests.gateway.test_messages import NoSink, NoStore
from tests.support.waiting import wait_until_async


class LiveThatFailsToClose:
    """A terminal whose live stream idles until closed, and whose closing fails (it went away)."""

    name = "t"

    def __init__(self) -> None:
        self.listening = asyncio.Event()
        self.sessions = 0

    async def connect(self) -> None:
        self.sessions += 1

    async def close(self) -> None:
        return None

    async def info(self) -> DeviceInfo:
        return DeviceInfo(serial_number="S1", clock=None, record_count=0, record_capacity=1000)

    async def read_records(self) -> list[RawPunch]:
        return []

    async def set_time(self, when: dt.datetime) -> None:
        return None

    async def clear_records(self, expected_count: int) -> None:
        return None

    def live(self) -> AsyncGenerator[RawPunch | None, None]:
        return self._events()

    async def _events(self) -> AsyncGenerator[RawPunch | None, None]:
        self.listening.set()
        try:
            while True:
                await asyncio.Event().wait()  # nothing ever comes
                yield None
        finally:
            raise UnreachableError("live: the terminal closed the connection", device=self.name)


async def test_a_cancelled_worker_stops_though_closing_the_live_stream_fails() -> None:
    terminal = ZkTerminal.model_validate({"name": "t", "type": "zk", "host": "192.0.2.9", "live": True})
    driver = LiveThatFailsToClose()
    worker = DeviceWorker(
        terminal=terminal,
        driver=cast(Driver, driver),
        store=cast(Store, NoStore()),
        sink=NoSink(),
        health=DeviceHealth("t"),
        timezone="UTC",
        driver_type="zk",
        backoff=Backoff(0.001, 0.001),
    )
    task = asyncio.create_task(worker.run())
    await wait_until_async(driver.listening.is_set, timeout=30, message="the live stream")
    task.cancel()
    # Bounded: before the fix the worker retried for ever, connecting again and again.
    done, _ = await asyncio.wait({task}, timeout=30)
    assert task in done, f"the worker outlived its cancellation ({driver.sessions} sessions)"
    assert task.cancelled()
    assert driver.sessions == 1
