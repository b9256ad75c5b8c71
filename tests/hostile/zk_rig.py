"""What the ZK hostile tests check besides the error: the pool threads came back, memory stayed
put, nothing was left unretrieved, and a good terminal is read normally afterwards.

    peak = RssPeak(); async with peak: ...        # the highest RSS growth while it ran
    await threads_settle(baseline)                # no pool thread still in driver code
    with loop_errors() as errors: ...             # what the loop's exception handler got
    await good_terminal_reads_normally(transport)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import zk

from punchgate.drivers.zk import driver as zk_driver
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.emulator import ZkEmulator
from tests.hostile.common import rss_bytes
from tests.support.waiting import wait_until_async

MAX_RSS_GROWTH_MB = 50
POOL_PREFIX = "zk_"  # the driver's thread pool names its threads zk_0, zk_1, ...
# Code a pool thread runs only while it serves a call: the driver (not its emulator), or pyzk.
_DRIVER_DIR = str(Path(zk_driver.__file__).parent) + "/"
_PYZK = str(Path(zk.__file__).parent) + "/"


def terminal(port: int, transport: str, *, name: str = "hostile", **more: Any) -> ZkTerminal:
    return ZkTerminal.model_validate(
        {
            "name": name,
            "type": "zk",
            "host": "127.0.0.1",
            "port": port,
            "transport": transport,
            **more,
        }
    )


def busy_pool_threads() -> list[str]:
    """Threads running the ZK driver's or pyzk's code right now (an idle pool thread runs neither)."""
    frames = sys._current_frames()
    busy = []
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        while frame is not None:
            filename = frame.f_code.co_filename
            ours = filename.startswith(_DRIVER_DIR) and not filename.startswith(_DRIVER_DIR + "emulator/")
            if ours or filename.startswith(_PYZK):
                busy.append(thread.name)
                break
            frame = frame.f_back
    return busy


def other_threads() -> list[str]:
    """Threads besides the ZK pool's (which keeps idle threads, and may add one on a race)."""
    return [t.name for t in threading.enumerate() if not t.name.startswith(POOL_PREFIX)]


async def threads_settle(baseline: int, timeout: float = 5.0) -> None:
    """Wait until no thread runs driver code, and no more other threads run than at `baseline`."""
    await wait_until_async(
        lambda: not busy_pool_threads() and len(other_threads()) <= baseline,
        timeout=timeout,
        message=lambda: f"busy: {busy_pool_threads()}; running: {other_threads()}, {baseline} before",
    )


class RssPeak:
    """Samples this process's resident memory while the block runs; `growth_mb` is the peak
    above what it was on entry (after a garbage collection)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.start = 0
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def growth_mb(self) -> float:
        return max(0, self.peak - self.start) / (1024 * 1024)

    async def __aenter__(self) -> Self:
        gc.collect()
        self.start = self.peak = rss_bytes()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        gc.collect()
        self.peak = max(self.peak, rss_bytes())

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes())
            await asyncio.sleep(self.interval)


@contextlib.contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """What the running loop's exception handler receives meanwhile ("Future exception was
    never retrieved" among others), garbage collected at the end so nothing escapes."""
    loop = asyncio.get_running_loop()
    got: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: got.append(context))
    try:
        yield got
        gc.collect()
    finally:
        loop.set_exception_handler(previous)


async def good_terminal_reads_normally(transport: str) -> None:
    """A good emulated terminal, read completely by a fresh driver in this same process."""
    emulator = ZkEmulator(profile="tft", serial_number="GOOD0000001")
    emulator.generate_log(1500, days=3, users=5, seed=11)
    await emulator.start()
    try:
        port = emulator.tcp_port if transport == "tcp" else emulator.udp_port
        assert port is not None
        driver = ZkDriver(terminal(port, transport, timeout=2.0, name="good"))
        try:
            await driver.connect()
            assert (await driver.info()).serial_number == "GOOD0000001"
            punches = await driver.read_records()
        finally:
            await driver.close()
        assert [p.raw for p in punches] == [r.raw for r in emulator.records]
    finally:
        await emulator.stop()
