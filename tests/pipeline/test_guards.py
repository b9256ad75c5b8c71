"""The never-lose-a-punch guards, end to end: guarded log clearing and a full buffer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.broker import Broker
from tests.support.config import zk_terminal
from tests.support.gateway import GatewayProcess
from tests.support.subscriber import Subscriber
from tests.support.waiting import wait_for_async
from tests.support.zk import expected_ids


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
    assert not await subscriber.missing_after(set(before), timeout=60)
    assert await wait_for_async(lambda: terminal.record_count == 0, timeout=20), "log was not cleared"
    with sqlite3.connect(tmp_path / "buffer.db") as db:
        (stored,) = db.execute("SELECT count(*) FROM punches").fetchone()
    assert stored == 800
    # Punches after a clear are read, delivered and cleared like any other. The log is empty as
    # soon as CLEAR_ATTLOG is done, but the clear holds the terminal disabled (refusing punches)
    # until it re-enables it; the gateway logs terminal_log_cleared after that.
    await gateway.wait_until_async(
        lambda: gateway.events("terminal_log_cleared"), timeout=60, message="the first clear"
    )
    assert terminal.add_punch("2", state=1, verify=1) is not None, "the terminal refused the punch"
    after = expected_ids(terminal)
    assert not await subscriber.missing_after(set(after), timeout=60)
    await gateway.wait_until_async(
        lambda: len(gateway.events("terminal_log_cleared")) >= 2, timeout=60, message="the second clear"
    )
    # Every guarded clear re-enables the terminal. Not checked at the instant the punch arrived:
    # the forwarder sends it as soon as it is committed, while the gateway may still be clearing it
    # from the terminal, disabled meanwhile. Left disabled, nothing would enable it again.
    await gateway.wait_until_async(lambda: terminal.enabled, timeout=30, message="terminal enabled")


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
    assert await wait_for_async(
        lambda: '"event": "store_refused_stop_reading"' in gateway.log_text(), timeout=30
    )
    assert await wait_for_async(lambda: '"code": "buffer_full"' in gateway.log_text(), timeout=30)
    with sqlite3.connect(tmp_path / "buffer.db") as db:
        (stored,) = db.execute("SELECT count(*) FROM punches").fetchone()
    assert stored == 1000
    await asyncio.to_thread(broker.start)
    # In a thread: the emulators live on this event loop and must keep answering the gateway.
    await asyncio.to_thread(subscriber.wait_subscribed, 2, timeout=30)
    everything = set(expected_ids(first)) | set(expected_ids(second))
    assert not await subscriber.missing_after(everything, timeout=90)

    def buffer_full_transitions() -> set[str]:
        return {
            json.loads(line)["event"]
            for line in gateway.log_text().splitlines()
            if '"code": "buffer_full"' in line and line.startswith("{")
        }

    assert await wait_for_async(
        lambda: buffer_full_transitions() >= {"fault_raised", "fault_cleared"}, timeout=60
    )
