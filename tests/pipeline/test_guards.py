"""The never-lose-a-punch guards, end to end: guarded log clearing and a full buffer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.broker import Broker
from tests.gateway_process import GatewayProcess
from tests.pipeline.conftest import zk_terminal
from tests.pipeline.expected import expected_ids
from tests.pipeline.test_zk_pipeline import arrived
from tests.subscriber import Subscriber


async def eventually(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return condition()


async def test_guarded_clear_empties_the_terminal_only_after_a_durable_read(
    emulators: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    subscriber: Subscriber,
    tmp_path: Path,
) -> None:
    (terminal,) = await emulators(1, records=800)
    before = expected_ids(terminal)
    gateway = gateway_factory([zk_terminal("t", terminal, clear_log=True, live=False, poll_interval=2)])
    gateway.start()
    assert not await arrived(subscriber, set(before), timeout=60)
    assert await eventually(lambda: terminal.record_count == 0, 20), "log was not cleared"
    with sqlite3.connect(tmp_path / "buffer.db") as db:
        (stored,) = db.execute("SELECT count(*) FROM punches").fetchone()
    assert stored == 800
    # Punches after a clear are read and delivered like any other; the terminal stays enabled.
    terminal.add_punch("2", state=1, verify=1)
    after = expected_ids(terminal)
    assert not await arrived(subscriber, set(after), timeout=30)
    assert terminal.enabled
    assert '"event": "terminal_log_cleared"' in gateway.log_text()


async def test_full_buffer_stops_reading_and_resumes_when_drained(
    emulators: Callable[..., Any],
    gateway_factory: Callable[..., GatewayProcess],
    broker: Broker,
    subscriber: Subscriber,
    tmp_path: Path,
) -> None:
    first, second = await emulators(2, records=600)
    await asyncio.to_thread(broker.stop)  # nothing drains: punches pile up in the buffer
    gateway = gateway_factory(
        [
            zk_terminal("first", first, live=False, poll_interval=2),
            zk_terminal("second", second, live=False, poll_interval=2),
        ],
        buffer={"max_pending": 1000},
    )
    gateway.start()
    # The buffer fills to its limit (600 + 400) and refuses the rest, which the worker leaves
    # on the terminal until the buffer drains.
    assert await eventually(lambda: '"event": "store_refused_stop_reading"' in gateway.log_text(), 30)
    assert await eventually(lambda: '"code": "buffer_full"' in gateway.log_text(), 30)
    with sqlite3.connect(tmp_path / "buffer.db") as db:
        (stored,) = db.execute("SELECT count(*) FROM punches").fetchone()
    assert stored == 1000
    await asyncio.to_thread(broker.start)
    subscriber.wait_subscribed(2, timeout=30)
    everything = set(expected_ids(first)) | set(expected_ids(second))
    assert not await arrived(subscriber, everything, timeout=90)

    def buffer_full_transitions() -> set[str]:
        return {
            json.loads(line)["event"]
            for line in gateway.log_text().splitlines()
            if '"code": "buffer_full"' in line and line.startswith("{")
        }

    assert await eventually(lambda: buffer_full_transitions() >= {"fault_raised", "fault_cleared"}, 10)
