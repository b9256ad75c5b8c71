"""The ZK driver against the emulator over real loopback sockets: sessions, faults, live, clear."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time
from typing import Any

import pytest
import structlog

from punchgate.drivers.base import (
    AuthError,
    DriverError,
    DriverTimeoutError,
    ProtocolError,
    UnreachableError,
    UnsupportedDeviceError,
)
from punchgate.drivers.registry import create_driver
from punchgate.drivers.zk import session as zk_session
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.errors import ClearRefusedError, CountMismatchError
from tests.zk_driver.conftest import EmulatorFactory, terminal_config
from tests.zk_driver.test_pyzk_bugs import as_tuples, expected_punches, live_punches


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(("profile", "transport"), [("tft", "tcp"), ("tft", "udp"), ("bw", "udp")])
async def test_info_and_full_read(
    start_emulator: EmulatorFactory, open_driver: Any, profile: str, transport: str
) -> None:
    emulator = await start_emulator(profile=profile, serial_number="ABC1234567")
    emulator.generate_log(2500, days=20, users=30, seed=1)
    driver = await open_driver(terminal_config(emulator, transport))

    info = await driver.info()
    assert info.serial_number == "ABC1234567"
    assert info.platform == emulator.platform
    assert info.firmware == emulator.firmware_version
    assert info.model == emulator.device_name
    assert info.mac == emulator.mac
    assert (info.record_count, info.user_count) == (2500, 30)
    assert info.record_capacity == emulator.profile.record_capacity
    assert info.clock is not None and abs((info.clock - emulator.now()).total_seconds()) <= 2

    punches = await driver.read_records()
    assert as_tuples(punches) == expected_punches(emulator)
    assert len(punches[0].raw) == emulator.profile.attendance_record_size
    users = await driver.read_users()
    assert [(u.user_id, u.name) for u in users] == [(u.user_id, u.name) for u in emulator.users]


async def test_registry_builds_the_zk_driver(start_emulator: EmulatorFactory) -> None:
    emulator = await start_emulator(profile="tft")
    assert isinstance(create_driver(terminal_config(emulator)), ZkDriver)


async def test_comm_key_right_and_wrong(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="tft", comm_key=4321)
    emulator.generate_log(5, days=1, users=2)
    for transport in ("tcp", "udp"):
        driver = await open_driver(terminal_config(emulator, transport, comm_key="4321"))
        assert len(await driver.read_records()) == 5
        await driver.close()
    with pytest.raises(AuthError, match=r"zk1: .*refused the comm key"):
        await open_driver(terminal_config(emulator, comm_key="1234"))
    with pytest.raises(AuthError, match="requires a comm key"):
        await open_driver(terminal_config(emulator))
    assert emulator.counters.auth_failures == 1


async def test_unreachable_port_fails_fast(open_driver: Any) -> None:
    port = free_port()
    for transport in ("tcp", "udp"):
        config = terminal_config_for(port, transport, timeout=5.0)
        started = time.monotonic()
        with pytest.raises(UnreachableError, match="refused"):
            await open_driver(config)
        assert time.monotonic() - started < 2.0


def terminal_config_for(port: int, transport: str, **overrides: Any) -> Any:
    from punchgate.drivers.zk.config import ZkTerminal

    return ZkTerminal.model_validate(
        {"name": "zk1", "type": "zk", "host": "127.0.0.1", "port": port, "transport": transport, **overrides}
    )


async def test_hang_mid_session_times_out_within_the_timeout(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="tft")
    driver = await open_driver(terminal_config(emulator, timeout=1.0))
    await emulator.set_fault("hang")
    started = time.monotonic()
    with pytest.raises(DriverTimeoutError, match="zk1: info: the terminal stopped answering"):
        await driver.info()
    assert time.monotonic() - started < 2.5
    started = time.monotonic()
    await driver.close()  # a desynchronised session is not talked to again
    assert time.monotonic() - started < 1.0


async def test_hang_at_connect(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="tft")
    await emulator.set_fault("hang")
    with pytest.raises(DriverTimeoutError, match="no answer to CONNECT"):
        await open_driver(terminal_config(emulator, timeout=0.5))
    with pytest.raises(UnreachableError):  # over UDP, silence is all a missing terminal says
        await open_driver(terminal_config(emulator, "udp", timeout=0.5))


async def test_short_read_is_a_failed_pass(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="tft")
    emulator.generate_log(1500, days=5, users=10)
    await emulator.set_fault("short_read", missing=3)
    driver = await open_driver(terminal_config(emulator))
    with pytest.raises(CountMismatchError) as caught:
        await driver.read_records()
    assert isinstance(caught.value, ProtocolError) and caught.value.fault == "protocol_error"
    assert caught.value.reported == 1500
    assert as_tuples(caught.value.records) == expected_punches(emulator)[:-3]
    assert "reports 1500 records, the data set holds 1497" in str(caught.value)
    # The session is still in step: once the terminal behaves, the same connection reads.
    await emulator.clear_fault("short_read")
    assert len(await driver.read_records()) == 1500


async def test_garbage_reply_is_a_protocol_error(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="tft")
    driver = await open_driver(terminal_config(emulator))
    await emulator.set_fault("garbage_replies", count=1)
    with pytest.raises(ProtocolError, match="zk1: info"):
        await driver.info()


async def test_something_else_on_the_port_is_unsupported(open_driver: Any) -> None:
    async def answer_with_another_protocol(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read(64)
        writer.write(bytes.fromhex("55aa0100000000000000000000000000"))  # not a ZK envelope
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_with_another_protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UnsupportedDeviceError, match=r"not a ZK terminal.*55aa"):
            await open_driver(terminal_config_for(port, "tcp", timeout=2.0))
    finally:
        server.close()
        await server.wait_closed()


async def test_one_session_per_terminal_in_the_process(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="tft")
    await open_driver(terminal_config(emulator))
    with pytest.raises(DriverError, match="already has a session"):
        await open_driver(terminal_config(emulator, name="zk2"))


async def test_every_session_reenables_the_terminal(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="tft")
    await emulator.set_fault("stays_disabled")
    emulator.enabled = False  # left disabled by an earlier crash or another tool
    driver = await open_driver(terminal_config(emulator))
    assert (await driver.info()).extra["enabled"] is False  # for the stuck_disabled fault
    await driver.close()
    assert emulator.enabled


@pytest.mark.parametrize(("profile", "transport"), [("tft", "tcp"), ("bw", "udp"), ("bw8", "udp")])
async def test_live_then_read_on_the_same_connection(
    start_emulator: EmulatorFactory, open_driver: Any, profile: str, transport: str
) -> None:
    emulator = await start_emulator(profile=profile)
    emulator.generate_log(40, days=2, users=6)
    driver = await open_driver(terminal_config(emulator, transport))
    assert len(await driver.read_records()) == 40
    got = await live_punches(driver, emulator, ["1", "5", "6"])
    assert [p.user_id for p in got] == ["1", "5", "6"]
    assert all(p.state == 4 and p.verify == 15 for p in got)
    # aclose() unregistered events: more punches reach the log, not the socket, and the
    # following commands get their own replies.
    emulator.add_punch("2")
    info = await driver.info()
    assert info.record_count == 44
    assert as_tuples(await driver.read_records()) == expected_punches(emulator)
    sessions = emulator.counters.sessions_served
    assert sessions == 1


async def test_live_ticks_when_idle_and_close_during_a_burst(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="tft", event_ack_timeout=0.2)
    emulator.generate_log(10, days=1, users=3)
    driver = await open_driver(terminal_config(emulator))
    live = driver.live()
    assert live is not None
    started = time.monotonic()
    assert await anext(live) is None  # an idle tick within about a second
    assert time.monotonic() - started < 2.0
    for _ in range(5):
        emulator.add_punch("2")
    first = await anext(live)
    while first is None:
        first = await anext(live)
    with structlog.testing.capture_logs() as logs:
        await live.aclose()  # events still queued at the terminal are left for the full read
        assert len(await driver.read_records()) == 15
        assert (await driver.info()).record_count == 15
    # The terminal kept sending its queued events after the unregistration: they were
    # acknowledged and skipped, never taken for a command's reply.
    assert any(entry["event"] == "zk_stray_event_skipped" for entry in logs)


async def test_live_disabled_by_config(start_emulator: EmulatorFactory) -> None:
    emulator = await start_emulator(profile="tft")
    assert ZkDriver(terminal_config(emulator, live=False)).live() is None


async def test_live_does_not_hold_a_pool_thread(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    zk_session.configure_pool(1)
    try:
        quiet = await start_emulator(profile="tft", serial_number="QUIET")
        busy = await start_emulator(profile="tft", serial_number="BUSY")
        busy.generate_log(3000, days=3, users=5)
        listener = await open_driver(terminal_config(quiet))
        reader = await open_driver(terminal_config(busy, name="zk2"))
        live = listener.live()
        assert live is not None
        assert await anext(live) is None  # listening, idle
        # With one pool thread, this read completes only if the idle stream holds none.
        assert len(await asyncio.wait_for(reader.read_records(), 10)) == 3000
        await live.aclose()
    finally:
        zk_session.configure_pool(zk_session.DEFAULT_POOL_SIZE)


async def test_lost_connection_during_live(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="tft")
    driver = await open_driver(terminal_config(emulator))
    live = driver.live()
    assert live is not None
    assert await anext(live) is None
    await emulator.set_fault("restart", silent=False, downtime=0)
    with pytest.raises(UnreachableError, match="closed the connection"):
        async with asyncio.timeout(5):
            while True:
                await anext(live)
    await live.aclose()


async def test_clear_records_is_guarded(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="tft")
    emulator.generate_log(30, days=1, users=3)
    driver = await open_driver(terminal_config(emulator))
    stored = await driver.read_records()
    emulator.add_punch("1")  # arrives after the read: must not be cleared unseen
    with pytest.raises(ClearRefusedError, match="holds 31 records, 30 were stored"):
        await driver.clear_records(len(stored))
    assert emulator.record_count == 31
    assert emulator.enabled  # re-enabled in the finally

    await driver.clear_records(31)
    assert emulator.record_count == 0
    assert emulator.enabled
    assert emulator.users  # CLEAR_ATTLOG, not CLEAR_DATA: users stay


async def test_set_time(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="bw")
    driver = await open_driver(terminal_config(emulator, "udp"))
    target = dt.datetime(2031, 7, 4, 12, 30, 0)
    await driver.set_time(target)
    assert abs((emulator.now() - target).total_seconds()) <= 2
    clock = (await driver.info()).clock
    assert clock is not None and abs((clock - target).total_seconds()) <= 2


async def test_dead_battery_clock_is_reported(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="tft")
    await emulator.set_fault("dead_battery")
    driver = await open_driver(terminal_config(emulator))
    clock = (await driver.info()).clock
    assert clock is not None and clock.year == 2000 and clock.month == 1
