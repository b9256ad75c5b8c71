"""Fixtures for remote commands end to end: ZK emulators, a gateway allowed every command, and
a central commander on the same broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.gateway.commands.catalogue import CATALOGUE
from tests.commands.commander import Commander
from tests.support.broker import Broker

ALL_COMMANDS = list(CATALOGUE)
FAST = {"reconnect_min": 0.1, "reconnect_max": 1.0, "protocol": "5"}


def sections(**commands: Any) -> dict[str, dict[str, Any]]:
    """Config sections: every command allowed unless `allow` says otherwise; the gateway's clock
    trusted (a test box may not say whether it is synchronised)."""
    return {
        "commands": {"allow": ALL_COMMANDS, **commands},
        "health": {"gateway_clock": "trust"},
    }


@pytest.fixture
async def zk_emulators() -> AsyncIterator[Callable[..., Any]]:
    started: list[ZkEmulator] = []

    async def make(count: int = 1, *, records: int = 0, **options: Any) -> list[ZkEmulator]:
        batch = []
        for _ in range(count):
            emulator = ZkEmulator(serial_number=f"CMD{len(started):05d}", **options)
            emulator.add_user("1", name="Alice", card=111)
            emulator.add_user("2", name="Bob")
            if records:
                emulator.generate_log(records=records, days=5, users=2, seed=len(started))
            await emulator.start()
            started.append(emulator)
            batch.append(emulator)
        return batch

    yield make
    for emulator in started:
        await emulator.stop()


@pytest.fixture
def central(broker: Broker) -> Iterator[Commander]:
    with Commander(broker.host, broker.port) as commander:
        yield commander
