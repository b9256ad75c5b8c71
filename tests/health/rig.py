"""A test rig for health end-to-end tests: emulated ZK terminals on their own event loop thread.

The terminals run in a background thread (their own asyncio loop), so the tests themselves
can be plain synchronous code that drives a real gateway process, a real broker, HTTP and
the CLI, and switches emulator faults while all of it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from punchgate.drivers.zk.emulator import ZkEmulator

T = TypeVar("T")
PUNCHER = "77"


class EmulatorFarm:
    """ZK emulators served by one event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="emulators", daemon=True)
        self._thread.start()
        self.terminals: dict[str, ZkEmulator] = {}

    def run(self, coro: Awaitable[T], timeout: float = 15.0) -> T:
        async def wrapper() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def do(self, action: Callable[[], T]) -> T:
        """Run a plain function on the emulators' loop (their state is not thread-safe)."""

        async def call() -> T:
            return action()

        return self.run(call())

    def add(self, name: str, *, records: int, seed: int, **options: Any) -> ZkEmulator:
        async def start() -> ZkEmulator:
            # The emulator's clock follows the host's local wall time; the gateway config says UTC.
            offset = dt.timedelta(
                seconds=round(
                    (dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.datetime.now()).total_seconds()
                )
            )
            emulator = ZkEmulator(
                profile="tft",
                serial_number=f"HEALTH-{name}",
                transports=("tcp",),
                clock_offset=offset,
                name=name,
                **options,
            )
            if records:
                emulator.generate_log(records=records, days=2, users=5, seed=seed)
            emulator.add_user(PUNCHER, name="Tester")  # someone who can punch on every terminal
            await emulator.start()
            return emulator

        emulator = self.run(start())
        self.terminals[name] = emulator
        return emulator

    def close(self) -> None:
        for emulator in self.terminals.values():
            with contextlib.suppress(Exception):  # keep stopping the others
                self.run(emulator.stop(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def fault_metrics(base_url: str) -> dict[tuple[str, str], float]:
    """{(device, code): value} of punchgate_device_fault_active from a real /metrics scrape."""
    status, body = http_get(base_url + "/metrics")
    assert status == 200
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "punchgate_device_fault_active":
            for sample in family.samples:
                out[(sample.labels["device"], sample.labels["code"])] = sample.value
    return out


def api_devices(base_url: str) -> dict[str, dict[str, Any]]:
    status, body = http_get(base_url + "/api/devices")
    assert status == 200
    data: dict[str, Any] = json.loads(body)
    return {d["device"]: d for d in data["devices"]}
