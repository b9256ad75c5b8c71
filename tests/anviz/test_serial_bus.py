"""Anviz terminals on one serial line: real pseudo-terminal, real pyserial, emulated devices."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from structlog.testing import capture_logs

from punchgate.drivers.anviz import codec, serial_bus
from punchgate.drivers.anviz.driver import VERIFY_CARD, VERIFY_FINGERPRINT, VERIFY_PASSWORD, raw_punch
from punchgate.drivers.anviz.emulator import EmulatedTerminal, Faults
from punchgate.drivers.base import ProtocolError, RawPunch, UnreachableError
from tests.anviz.conftest import DriverFactory, PtyFactory, serial_url


def expected(terminal: EmulatedTerminal) -> list[RawPunch]:
    return [raw_punch(r, terminal.epoch) for r in terminal.records]


async def test_two_terminals_on_one_bus_are_read_completely_and_correctly(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    first, second = EmulatedTerminal(1), EmulatedTerminal(77, serial_number="LINE2-SN")
    first.add_history(61)  # three packets: 25 + 25 + 11
    second.add_history(130, users=7)
    bus = pty_bus(first, second)
    one, two = make_driver(serial_url(bus), 1), make_driver(serial_url(bus), 77)
    await asyncio.gather(one.connect(), two.connect())

    got_one, got_two = await asyncio.gather(one.read_records(), two.read_records())

    assert got_one == expected(first) and got_two == expected(second)
    assert len({p.raw for p in got_two}) == 130  # no duplicates
    # fields come through as the terminal stored them (add_history cycles FP1, card, password)
    assert [p.verify for p in got_one[:3]] == [VERIFY_FINGERPRINT, VERIFY_CARD, VERIFY_PASSWORD]
    assert got_one[1].user_id == "1001" and got_one[1].state == 1 and got_one[1].work_code == 1
    assert got_one[0].timestamp == first.records[0].local_time()
    # both drivers go through the one owner of that port
    buses = [b for b in serial_bus._buses.values() if b.endpoint.port == bus.path]
    assert len(buses) == 1 and buses[0].users == 2
    info_one, info_two = await asyncio.gather(one.info(), two.info())
    assert (info_one.serial_number, info_two.serial_number) == ("AZ0000000001", "LINE2-SN")
    assert (info_one.record_count, info_two.record_count, info_two.user_count) == (61, 130, 7)
    assert info_two.record_capacity == 50_000 and info_two.extra["device_id"] == 77


async def test_noise_crc_errors_bad_lengths_and_lost_requests_lose_nothing(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    noisy = EmulatedTerminal(
        3, faults=Faults(crc_error_every=4, noise_every=3, bad_length_every=7, drop_every=5)
    )
    clean = EmulatedTerminal(4)
    noisy.add_history(180)
    clean.add_history(40)
    bus = pty_bus(noisy, clean)
    driver, other = make_driver(serial_url(bus), 3, attempts=4), make_driver(serial_url(bus), 4)

    with capture_logs() as logs:
        got, got_other = await asyncio.gather(driver.read_records(), other.read_records())

    assert got == expected(noisy)  # every record, in order, none twice
    assert got_other == expected(clean)
    stats = driver.link.stats
    assert stats.garbage_frames > 0 and stats.retries > 0
    assert other.link.stats.garbage_frames == 0
    garbage = [e for e in logs if e["event"] == "anviz_garbage_discarded"]
    assert {e["reason"] for e in garbage} >= {"bad CRC", "noise before start byte"}
    assert any(e["raw"] == "00ff13a5000000" for e in garbage)  # the raw bytes, in hex
    assert all(e["device"] == "anviz-3" for e in garbage)
    assert noisy.new_count == 180  # reading marks nothing read


async def test_a_terminal_that_stops_answering_is_unreachable_while_its_neighbour_works(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    dead, alive = EmulatedTerminal(5), EmulatedTerminal(6)
    alive.add_history(30)
    bus = pty_bus(dead, alive)
    gone, working = make_driver(serial_url(bus), 5), make_driver(serial_url(bus), 6)
    await gone.connect()
    dead.faults.silent = True

    results = await asyncio.gather(gone.read_records(), working.read_records(), return_exceptions=True)

    assert isinstance(results[0], UnreachableError) and results[0].fault == "unreachable"
    assert "anviz-5" in str(results[0]) and "no answer after 3 attempts" in str(results[0])
    assert results[1] == expected(alive)
    assert gone.link.stats.no_reply == 3
    with pytest.raises(UnreachableError):
        await gone.connect()
    dead.faults.silent = False  # back on the line: the same driver recovers
    await gone.connect()
    assert await gone.read_records() == []


async def test_only_garbage_is_a_protocol_error(pty_bus: PtyFactory, make_driver: DriverFactory) -> None:
    broken = EmulatedTerminal(8, faults=Faults(crc_error_every=1))
    driver = make_driver(serial_url(pty_bus(broken)), 8, attempts=2)
    with pytest.raises(ProtocolError, match="only garbage after 2 attempts") as info:
        await driver.connect()
    assert info.value.fault == "protocol_error"


async def test_clear_marks_exactly_the_committed_records_read(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    terminal = EmulatedTerminal(9)
    terminal.add_history(40)
    driver = make_driver(serial_url(pty_bus(terminal)), 9)
    first = await driver.read_records()
    assert await driver.read_records() == first  # a read alone clears nothing
    late = terminal.punch(4242)  # arrives after the read, before the clear
    assert late is not None

    await driver.clear_records(len(first))

    assert terminal.new_count == 1
    assert await driver.read_records() == [raw_punch(late, terminal.epoch)]
    assert len(terminal.records) == 41  # the log itself is untouched


async def test_a_lost_clear_reply_is_confirmed_by_counts_not_repeated(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    terminal = EmulatedTerminal(10)
    terminal.add_history(30)
    driver = make_driver(serial_url(pty_bus(terminal)), 10)
    records = await driver.read_records()
    terminal.add_history(5, start=dt.datetime(2030, 1, 1))  # unread records that must stay new
    terminal.faults.lose_reply_to.add(codec.CMD_CLEAR_RECORDS)

    await driver.clear_records(len(records))

    assert terminal.new_count == 5


async def test_clear_refuses_when_something_else_marked_records_read(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    terminal = EmulatedTerminal(11)
    terminal.add_history(10)
    driver = make_driver(serial_url(pty_bus(terminal)), 11)
    records = await driver.read_records()
    terminal.new_flags = [False] * 8 + [True] * 2  # e.g. CrossChex fetched them meanwhile
    with pytest.raises(ProtocolError, match="2 new records, expected at least 10"):
        await driver.clear_records(len(records))
    assert terminal.new_count == 2


async def test_clock_reset_is_visible_and_set_time_fixes_it(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    terminal = EmulatedTerminal(12)
    driver = make_driver(serial_url(pty_bus(terminal)), 12)
    terminal.reset_clock()
    info = await driver.info()
    assert info.clock is not None and info.clock.date() == dt.date(2000, 1, 2)

    target = dt.datetime(2031, 5, 6, 7, 8, 9)
    await driver.set_time(target)

    assert abs((terminal.clock() - target).total_seconds()) <= 2
    clock = (await driver.info()).clock
    assert clock is not None and abs((clock - target).total_seconds()) <= 2


async def test_full_log_is_reported_in_the_counts(pty_bus: PtyFactory, make_driver: DriverFactory) -> None:
    terminal = EmulatedTerminal(13, record_capacity=60)
    terminal.fill_log()
    assert terminal.punch(1) is None  # a full terminal stores nothing more
    driver = make_driver(serial_url(pty_bus(terminal)), 13)
    info = await driver.info()
    assert (info.record_count, info.record_capacity) == (60, 60)


async def test_missing_port_is_unreachable_and_line_settings_must_agree(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    driver = make_driver("serial:///dev/does-not-exist-anviz", 1, attempts=1)
    with pytest.raises(UnreachableError, match="cannot open /dev/does-not-exist-anviz"):
        await driver.connect()

    bus = pty_bus(EmulatedTerminal(1))
    await make_driver(serial_url(bus), 1).connect()
    with pytest.raises(ValueError, match="same baud/parity/rs485"):
        await make_driver(f"serial://{bus.path}?baud=19200", 2).connect()


async def test_the_bus_is_released_when_the_last_driver_closes(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    bus = pty_bus(EmulatedTerminal(1), EmulatedTerminal(2))
    one, two = make_driver(serial_url(bus), 1), make_driver(serial_url(bus), 2)
    await one.connect()
    await two.connect()
    await one.close()
    assert any(b.endpoint.port == bus.path for b in serial_bus._buses.values())
    await two.close()
    assert not any(b.endpoint.port == bus.path for b in serial_bus._buses.values())


async def test_an_adapter_that_echoes_our_requests_is_not_garbage(
    pty_bus: PtyFactory, make_driver: DriverFactory
) -> None:
    terminal = EmulatedTerminal(14)
    terminal.add_history(30)
    driver = make_driver(serial_url(pty_bus(terminal, echo=True)), 14)
    assert await driver.read_records() == expected(terminal)
    assert driver.link.stats.garbage_frames == 0 and driver.link.stats.retries == 0
