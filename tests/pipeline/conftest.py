"""Fixtures for end-to-end tests: emulated ZK terminals (the daemon and the broker come from
tests/conftest.py: `gateway_factory`, `broker`, `subscriber`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from punchgate.drivers.zk.emulator import ZkEmulator


@pytest.fixture
async def emulators() -> AsyncIterator[Callable[..., Any]]:
    """`await emulators(count, profile=..., records=..., ...)` starts terminals; all stop at teardown."""
    started: list[ZkEmulator] = []

    async def make(
        count: int = 1, *, records: int = 0, users: int = 20, seed: int = 0, **options: Any
    ) -> list[ZkEmulator]:
        batch = []
        for _ in range(count):
            emulator = ZkEmulator(
                serial_number=options.pop("serial_number", None) or f"SN{len(started):05d}", **options
            )
            if records:
                emulator.generate_log(records=records, days=30, users=users, seed=seed + len(started))
            await emulator.start()
            started.append(emulator)
            batch.append(emulator)
        return batch

    yield make
    for emulator in started:
        await emulator.stop()
