"""A contact after the session's first asks the terminal 4 things, not 8: its make (name,
firmware, platform, MAC) cannot change while a session lasts, so it is asked once a session;
the counts, clock, state and serial number every time (a replaced terminal is still seen)."""

from __future__ import annotations

from typing import Any

from tests.zk_driver.conftest import EmulatorFactory, terminal_config


async def test_a_sessions_later_contacts_skip_the_make(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(serial_number="TRIPS00001")
    emulator.generate_log(30, days=2, users=5, seed=2)
    driver = await open_driver(terminal_config(emulator))
    before = emulator.counters.packets
    first = await driver.info()
    asked_first = emulator.counters.packets - before
    before = emulator.counters.packets
    emulator.add_punch("1")
    again = await driver.info()
    assert emulator.counters.packets - before == 4 < asked_first == 8
    assert (again.model, again.firmware, again.platform, again.mac) == (
        first.model,
        first.firmware,
        first.platform,
        first.mac,
    )
    assert (first.record_count, again.record_count) == (30, 31)
    assert again.serial_number == "TRIPS00001"

    await emulator.set_fault("serial_changed", serial="TRIPS00002")  # replaced: seen at once
    assert (await driver.info()).serial_number == "TRIPS00002"

    await driver.close()
    await driver.connect()  # a new session asks for the make again
    before = emulator.counters.packets
    await driver.info()
    assert emulator.counters.packets - before == 8
