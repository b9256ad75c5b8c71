"""Fixtures for the ZK driver tests: real emulators on loopback ports, drivers pointed at them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.emulator import ZkEmulator

EmulatorFactory = Callable[..., Awaitable[ZkEmulator]]


@pytest.fixture
async def start_emulator() -> AsyncIterator[EmulatorFactory]:
    """Start emulators on free loopback ports; every one is stopped after the test."""
    started: list[ZkEmulator] = []

    async def start(**kwargs: Any) -> ZkEmulator:
        emulator = ZkEmulator(**kwargs)
        started.append(emulator)
        await emulator.start()
        return emulator

    yield start
    for emulator in started:
        await emulator.stop()


def terminal_config(emulator: ZkEmulator, transport: str = "tcp", **overrides: Any) -> ZkTerminal:
    port = emulator.tcp_port if transport == "tcp" else emulator.udp_port
    values: dict[str, Any] = {
        "name": "zk1",
        "type": "zk",
        "host": "127.0.0.1",
        "port": port,
        "transport": transport,
        "timeout": 2.0,
    }
    values.update(overrides)
    return ZkTerminal.model_validate(values)


@pytest.fixture
async def open_driver() -> AsyncIterator[Callable[[ZkTerminal], Awaitable[ZkDriver]]]:
    """Connect drivers; every one is closed after the test, even when it failed."""
    drivers: list[ZkDriver] = []

    async def connect(config: ZkTerminal) -> ZkDriver:
        driver = ZkDriver(config)
        drivers.append(driver)
        await driver.connect()
        return driver

    yield connect
    for driver in drivers:
        await driver.close()
