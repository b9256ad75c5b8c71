"""The ZK driver's tail read (`ZkDriver.read_records_from`): READ_BUFFER from a record's offset
returns exactly the log's records from there on, over TCP and UDP, for 40- and 16-byte logs;
it declines (None) until a whole read has shown the layout, for 8-byte logs (two layouts),
and for an index past the end of the log."""

from __future__ import annotations

from typing import Any

import pytest

from tests.zk_driver.conftest import EmulatorFactory, terminal_config
from tests.zk_driver.test_pyzk_bugs import as_tuples


@pytest.mark.parametrize(("profile", "transport"), [("tft", "tcp"), ("tft", "udp"), ("bw", "udp")])
async def test_the_tail_is_the_end_of_the_whole_log(
    start_emulator: EmulatorFactory, open_driver: Any, profile: str, transport: str
) -> None:
    emulator = await start_emulator(profile=profile, serial_number="TAIL000001")
    emulator.generate_log(3000, days=20, users=30, seed=4)
    driver = await open_driver(terminal_config(emulator, transport))
    assert await driver.read_records_from(10) is None, "a tail before the layout is known"
    whole = await driver.read_records()
    for user in ("1", "2", "3"):
        emulator.add_punch(user)
    tail = await driver.read_records_from(len(whole) - 1)
    again = await driver.read_records()
    assert tail is not None and len(tail) == 4
    assert as_tuples(tail) == as_tuples(again[len(whole) - 1 :])
    assert [r.raw for r in tail] == [r.raw for r in again[len(whole) - 1 :]]
    assert await driver.read_records_from(len(again)) is None, "no record there"
    small = await driver.read_records_from(0)  # the whole log the tail way: the same records
    assert small is not None and as_tuples(small) == as_tuples(again)


async def test_eight_byte_logs_are_always_read_whole(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="bw8", serial_number="TAIL000008")
    emulator.generate_log(200, days=5, users=10, seed=5)
    driver = await open_driver(terminal_config(emulator, "udp"))
    whole = await driver.read_records()
    assert len(whole) == 200
    assert await driver.read_records_from(100) is None


async def test_a_small_log_sent_at_once_is_cut_at_the_record(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="tft", serial_number="TAIL000010")
    emulator.generate_log(10, days=2, users=5, seed=6)  # 404 bytes: one CMD_DATA, no READ_BUFFER
    driver = await open_driver(terminal_config(emulator))
    whole = await driver.read_records()
    emulator.add_punch("2")
    tail = await driver.read_records_from(9)
    assert tail is not None and [r.raw for r in tail] == [r.raw for r in (await driver.read_records())[9:]]
    assert tail[0].raw == whole[9].raw
