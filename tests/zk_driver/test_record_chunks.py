"""`ZkDriver.read_record_chunks`: the log handed over in parts as the transfer delivers them.

Against the emulator over real TCP and UDP: the parts, joined, are exactly `read_records` for
every record layout (8 bytes, 16 and 40; the 8 and 16-byte profiles speak UDP only), a big log comes in more
than one part, a set that does not add up yields nothing and fails as `read_records` does,
and a read closed early leaves the next connect working.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import pytest

from punchgate.drivers.base import RawPunch, record_chunks
from punchgate.drivers.zk.driver import CountMismatchError, ZkDriver
from tests.zk_driver.conftest import EmulatorFactory, terminal_config


async def chunks_of(driver: ZkDriver) -> list[Sequence[RawPunch]]:
    parts: list[Sequence[RawPunch]] = []
    async with contextlib.aclosing(record_chunks(driver)) as chunks:
        async for part in chunks:
            parts.append(part)
    return parts


@pytest.mark.parametrize(
    ("profile", "transport"), [("tft", "tcp"), ("tft", "udp"), ("bw", "udp"), ("bw8", "udp")]
)
async def test_the_parts_joined_are_the_whole_read(
    start_emulator: EmulatorFactory, open_driver: Any, profile: str, transport: str
) -> None:
    emulator = await start_emulator(profile=profile, record_capacity=50_000, transports=(transport,))
    emulator.generate_log(5_000, days=60, users=40, seed=5)
    driver = await open_driver(terminal_config(emulator, transport, timeout=5.0))
    whole = await driver.read_records()
    parts = await chunks_of(driver)
    assert [raw for part in parts for raw in part] == whole
    assert len(whole) == 5_000
    if transport == "tcp" and profile == "tft":  # 200 kB: four READ_BUFFER chunks
        assert len(parts) >= 2, [len(part) for part in parts]


async def test_an_empty_log_yields_nothing(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="tft")
    driver = await open_driver(terminal_config(emulator, "tcp"))
    assert await chunks_of(driver) == []


async def test_a_set_that_does_not_add_up_yields_nothing_and_fails(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="tft", record_capacity=50_000)
    emulator.generate_log(3_000, days=30, users=20, seed=9)
    await emulator.set_fault("short_read", missing=2)
    driver = await open_driver(terminal_config(emulator, "tcp", timeout=5.0))
    parts: list[Sequence[RawPunch]] = []
    with pytest.raises(CountMismatchError):
        async with contextlib.aclosing(driver.read_record_chunks()) as chunks:
            async for part in chunks:
                parts.append(part)
    assert parts == []


async def test_a_read_closed_early_is_aborted_and_the_next_session_reads_it_all(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="tft", record_capacity=50_000, tcp_packet_interval=0.002)
    emulator.generate_log(6_000, days=30, users=20, seed=11)
    config = terminal_config(emulator, "tcp", timeout=5.0)
    driver = await open_driver(config)
    async with contextlib.aclosing(driver.read_record_chunks()) as chunks:
        first = await anext(chunks)  # the rest is still on the wire when the read is closed
    assert 0 < len(first) < 6_000
    await driver.close()
    await driver.connect()
    assert len(await driver.read_records()) == 6_000
