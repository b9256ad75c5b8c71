"""Anviz over TCP (loopback): polling, real-time pushes, heartbeats, a dropped connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from punchgate.drivers.anviz import codec
from punchgate.drivers.anviz.driver import raw_punch
from punchgate.drivers.anviz.emulator import EmulatedTerminal, Faults, TcpServer
from punchgate.drivers.anviz.transport import TcpLink
from punchgate.drivers.base import RawPunch, UnreachableError
from tests.anviz.conftest import DriverFactory
from tests.support.waiting import wait_until_async

ServerFactory = Callable[..., TcpServer]


async def test_tcp_read_matches_the_terminal(tcp_server: ServerFactory, make_driver: DriverFactory) -> None:
    terminal = EmulatedTerminal(1, faults=Faults(crc_error_every=5))
    terminal.add_history(70)
    server = tcp_server(terminal)
    driver = make_driver(f"tcp://127.0.0.1:{server.port}", 1)
    await driver.connect()
    assert await driver.read_records() == [raw_punch(r, terminal.epoch) for r in terminal.records]
    assert driver.link.stats.garbage_frames > 0
    info = await driver.info()
    assert info.record_count == 70 and info.serial_number == "AZ0000000001"


async def test_live_pushes_arrive_and_real_time_mode_is_switched_on(
    tcp_server: ServerFactory, make_driver: DriverFactory
) -> None:
    terminal = EmulatedTerminal(2)
    server = tcp_server(terminal)
    driver = make_driver(f"tcp://127.0.0.1:{server.port}", 2)
    await driver.connect()
    live = driver.live()
    assert live is not None and not terminal.realtime
    received: list[RawPunch] = []

    async def listen() -> None:
        async for item in live:
            if item is not None:
                received.append(item)

    task = asyncio.create_task(listen())
    try:
        await wait_until_async(lambda: terminal.realtime, timeout=5)
        record = terminal.punch(555, state=1, backup_code=0x08)
        assert record is not None
        await wait_until_async(lambda: len(received) == 1, timeout=5)
        assert received == [raw_punch(record, terminal.epoch)]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert terminal.new_count == 1  # a push is not a read: the next poll fetches it too


async def test_pushes_and_heartbeats_between_request_and_reply_are_sorted_out(
    tcp_server: ServerFactory, make_driver: DriverFactory
) -> None:
    terminal = EmulatedTerminal(3)
    terminal.config2[codec.CONFIG2_REALTIME_INDEX] = 1
    server = tcp_server(terminal)
    driver = make_driver(f"tcp://127.0.0.1:{server.port}", 3)
    await driver.connect()
    await wait_until_async(lambda: len(server._clients) == 1, timeout=5)
    server.send_heartbeat(terminal)
    pushed = terminal.punch(77)
    assert pushed is not None

    records = await driver.read_records()  # its replies come after the push and the heartbeat

    assert records == [raw_punch(pushed, terminal.epoch)]
    await wait_until_async(lambda: terminal.pongs == 1, timeout=5)
    link = driver.link
    assert isinstance(link, TcpLink) and link.pushes.qsize() == 1
    assert link.stats.unexpected_frames == 0


async def test_a_dropped_connection_ends_live_and_the_next_connect_recovers(
    tcp_server: ServerFactory, make_driver: DriverFactory
) -> None:
    terminal = EmulatedTerminal(4)
    server = tcp_server(terminal)
    driver = make_driver(f"tcp://127.0.0.1:{server.port}", 4)
    await driver.connect()
    live = driver.live()
    assert live is not None
    assert await anext(live) is None  # an idle tick while nobody punches
    server.drop_clients()
    with pytest.raises(UnreachableError, match="connection closed"):
        while True:
            await anext(live)
    await driver.connect()
    assert (await driver.info()).serial_number == "AZ0000000004"


async def test_nobody_listening_is_unreachable(make_driver: DriverFactory) -> None:
    server = TcpServer([EmulatedTerminal(1)])
    port = server.port
    server.stop()  # a port that was just free: connection refused
    driver = make_driver(f"tcp://127.0.0.1:{port}", 1)
    with pytest.raises(UnreachableError, match="cannot connect"):
        await driver.connect()


async def test_serial_links_have_no_live_stream(make_driver: DriverFactory) -> None:
    assert make_driver("serial:///dev/null", 1).live() is None
    assert make_driver("tcp://127.0.0.1:5010", 1, live=False).live() is None
