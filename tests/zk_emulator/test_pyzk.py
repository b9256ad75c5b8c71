"""pyzk 0.9 (a real, independent client) against the emulator over loopback TCP and UDP."""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import struct
import termios
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from zk import ZK
from zk.exception import ZKErrorResponse, ZKNetworkError

from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.waiting import wait_until_async
from tests.support.zk import listening_for_punches


def pyzk(emu: ZkEmulator, *, udp: bool = False, password: int = 0, timeout: float = 10) -> Any:
    port = emu.udp_port if udp else emu.tcp_port
    assert port is not None
    client = ZK("127.0.0.1", port, timeout=timeout, password=password, force_udp=udp, ommit_ping=True)
    if not udp:
        emu.paced_gate = _read_by(client, timeout)
    return client


def _read_by(client: Any, timeout: float) -> Callable[[int], Awaitable[None]]:
    """The emulator's gate for paced transfers (`ZkEmulator.paced_gate`): each piece goes out
    once pyzk has read every byte sent before it.

    pyzk 0.9 reads a burst by the sizes it asks recv() for and loses its place, then waits
    for good, when pieces pile up in its socket (drivers/zk/bulk_read.py). The emulator's
    pauses keep that from happening on an idle host, but not on a busy one: the 100,000-record
    read timed out beside a benchmark's fill. Both ends are in this process and on loopback,
    so "read" is observable: nothing unacknowledged on the emulator's side (SIOCOUTQ) and
    nothing unread in pyzk's socket (FIONREAD). A client that stops reading is waited for
    `timeout` seconds at most, its own recv timeout."""

    def queued(fd: int, request: int) -> int:
        try:
            return int(struct.unpack("i", fcntl.ioctl(fd, request, b"\0\0\0\0"))[0])
        except OSError:  # closed on either side: nothing left to wait for
            return 0

    async def gate(server_fd: int) -> None:
        sock = getattr(client, "_ZK__sock", None)
        if sock is None or server_fd < 0:
            return
        give_up = time.monotonic() + timeout
        while queued(server_fd, termios.TIOCOUTQ) or queued(sock.fileno(), termios.FIONREAD):
            if time.monotonic() > give_up:
                return
            await asyncio.sleep(0.0002)

    return gate


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
@pytest.mark.parametrize("key", [0, 4321], ids=["no-key", "comm-key"])
async def test_connect_and_identity(udp: bool, key: int) -> None:
    async with ZkEmulator(profile="tft", serial_number="ABC123", comm_key=key) as emu:

        def session() -> tuple[str, ...]:
            conn = pyzk(emu, udp=udp, password=key).connect()
            try:
                return (
                    conn.get_serialnumber(),
                    conn.get_platform(),
                    conn.get_firmware_version(),
                    conn.get_mac(),
                )
            finally:
                conn.disconnect()

        assert await asyncio.to_thread(session) == ("ABC123", "ZEM600_TFT", "Ver 6.60 Apr 28 2017", emu.mac)
        assert emu.counters.sessions_served == 1
        await wait_until_async(lambda: not emu.session_active, timeout=10)


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
async def test_wrong_comm_key_is_refused(udp: bool) -> None:
    async with ZkEmulator(profile="tft", comm_key=45) as emu:
        with pytest.raises(ZKErrorResponse, match="Unauthenticated"):
            await asyncio.to_thread(lambda: pyzk(emu, udp=udp, password=12).connect())
        assert emu.counters.auth_failures == 1


async def test_options_pyzk_asks_including_unknown_keys() -> None:
    async with ZkEmulator(profile="bw") as emu:  # BW knows fewer option keys

        def session() -> tuple[Any, ...]:
            conn = pyzk(emu, udp=True).connect()
            try:
                return (
                    conn.get_device_name(),
                    conn.get_fp_version(),
                    conn.get_face_version(),  # ACK_ERROR on BW
                    conn.get_user_extend_fmt(),  # ACK_ERROR, then pyzk's error-clearing packets
                    conn.get_network_params()["ip"],
                    conn.get_pin_width(),
                )
            finally:
                conn.disconnect()

        assert await asyncio.to_thread(session) == ("K20", 9, None, None, "127.0.0.1", 9)
        assert emu.counters.unknown_commands >= 4  # ACK_ERROR + 3 x ACK_UNKNOWN sent as commands


async def test_bw_profile_refuses_tcp() -> None:
    async with ZkEmulator(profile="bw") as emu:
        assert emu.tcp_port is None
        with pytest.raises(ValueError, match="udp only"):
            ZkEmulator(profile="bw", transports=["tcp"])


@pytest.mark.parametrize(
    ("profile", "udp", "user_size"), [("tft", False, 72), ("tft", True, 72), ("bw", True, 28)]
)
async def test_read_sizes_users_and_ten_records(profile: str, udp: bool, user_size: int) -> None:
    async with ZkEmulator(profile=profile) as emu:
        emu.generate_log(records=10, days=2, users=4, seed=3)
        expected = [(r.user_id, r.timestamp, r.verify, r.state) for r in emu.records]

        def session() -> tuple[Any, Any, list[Any], float]:
            conn = pyzk(emu, udp=udp).connect()
            try:
                conn.read_sizes()
                users = conn.get_users()
                attendance = conn.get_attendance()
                return (conn.users, conn.records, conn.rec_cap), users, attendance, conn.user_packet_size
            finally:
                conn.disconnect()

        sizes, users, attendance, packet_size = await asyncio.to_thread(session)
        assert sizes == (4, 10, emu.data.record_capacity)
        assert [u.user_id for u in users] == ["1", "2", "3", "4"]
        assert packet_size == user_size
        assert [(a.user_id, a.timestamp, a.status, a.punch) for a in attendance] == expected


@pytest.mark.long  # the driver's own 100k reads (tests/pipeline, tests/zk_driver) stay in the short run
async def test_hundred_thousand_records_over_tcp() -> None:
    async with ZkEmulator(profile="tft") as emu:
        emu.generate_log(records=100_000, days=60, users=200, seed=7)
        first, last = emu.records[0], emu.records[-1]

        def session() -> list[Any]:
            conn = pyzk(emu, timeout=30).connect()
            try:
                return list(conn.get_attendance())
            finally:
                conn.disconnect()

        attendance = await asyncio.to_thread(session)
        assert len(attendance) == 100_000
        assert (attendance[0].user_id, attendance[0].timestamp) == (first.user_id, first.timestamp)
        assert (attendance[-1].user_id, attendance[-1].timestamp) == (last.user_id, last.timestamp)


async def test_a_paced_transfer_waits_for_pyzk_to_read_each_piece() -> None:
    """The gate `pyzk()` installs is awaited before every piece after the first, and pyzk
    reads the whole log through it."""
    async with ZkEmulator(profile="tft") as emu:
        emu.generate_log(records=5_000, days=10, users=20, seed=9)
        client = pyzk(emu)
        waits = [0]
        read_by = emu.paced_gate
        assert read_by is not None

        async def counted(fd: int) -> None:
            waits[0] += 1
            await read_by(fd)

        emu.paced_gate = counted

        def session() -> int:
            conn = client.connect()
            try:
                return len(conn.get_attendance())
            finally:
                conn.disconnect()

        assert await asyncio.to_thread(session) == 5_000
        # 5,000 records of 40 bytes: 200,000 bytes in CMD_DATA packets of at most 1,008 data
        # bytes over TCP (TCP_DATA_CHUNK), each sent as a header and its data.
        assert waits[0] >= 2 * (5_000 * 40 // 1_008)


async def test_large_log_over_udp_raw_buffer() -> None:
    """Over UDP pyzk reads 16 KiB per READ_BUFFER in 1024-byte datagrams."""
    async with ZkEmulator(profile="tft") as emu:
        emu.generate_log(records=20_000, days=30, users=50, seed=8)

        def session() -> tuple[bytes, int]:
            conn = pyzk(emu, udp=True).connect()
            try:
                data, size = conn.read_with_buffer(13)
                return data, size
            finally:
                conn.disconnect()

        data, size = await asyncio.to_thread(session)
        assert size == len(data) == 4 + 20_000 * 40
        assert data == emu.data.attendance_data_set()


async def test_get_and_set_time() -> None:
    async with ZkEmulator(profile="tft", clock_offset=dt.timedelta(hours=-3)) as emu:
        target = dt.datetime(2031, 7, 4, 12, 30, 15)

        def session() -> tuple[dt.datetime, dt.datetime]:
            conn = pyzk(emu).connect()
            try:
                before = conn.get_time()
                conn.set_time(target)
                return before, conn.get_time()
            finally:
                conn.disconnect()

        before, after = await asyncio.to_thread(session)
        host = dt.datetime.now()
        assert abs((before - (host - dt.timedelta(hours=3))).total_seconds()) < 5
        assert abs((after - target).total_seconds()) < 5
        assert abs((emu.now() - target).total_seconds()) < 5


@pytest.mark.parametrize("udp", [False, True], ids=["tcp", "udp"])
async def test_live_capture_receives_punches_added_while_connected(udp: bool) -> None:
    async with ZkEmulator(profile="tft") as emu:
        for n in (1, 2, 3):
            emu.add_user(str(n))
        got: list[Any] = []
        conn = await asyncio.to_thread(lambda: pyzk(emu, udp=udp).connect())
        stop = threading.Event()

        def capture() -> None:
            for event in conn.live_capture(new_timeout=0.5):
                if event is not None:
                    got.append(event)
                if stop.is_set() or len(got) >= 3:
                    conn.end_live_capture = True

        task = asyncio.create_task(asyncio.to_thread(capture))
        try:
            await wait_until_async(lambda: listening_for_punches(emu), timeout=10)
            when = dt.datetime(2025, 5, 6, 7, 8, 9)
            for n, state in ((1, 0), (2, 1), (3, 2)):
                emu.add_punch(str(n), when + dt.timedelta(minutes=n), state=state, verify=15)
            await wait_until_async(lambda: len(got) >= 3, timeout=10)
        finally:
            stop.set()
            await task
        assert [(e.user_id, e.timestamp, e.status, e.punch) for e in got] == [
            ("1", when + dt.timedelta(minutes=1), 15, 0),
            ("2", when + dt.timedelta(minutes=2), 15, 1),
            ("3", when + dt.timedelta(minutes=3), 15, 2),
        ]
        assert emu.record_count == 3
        await asyncio.to_thread(conn.disconnect)


async def test_clear_attendance_disable_enable_and_restart() -> None:
    async with ZkEmulator(profile="tft", restart_downtime=0.3) as emu:
        emu.generate_log(records=25, days=1, users=2, seed=1)
        conn = await asyncio.to_thread(lambda: pyzk(emu).connect())
        await asyncio.to_thread(conn.disable_device)
        assert emu.enabled is False
        assert emu.add_punch("1") is None  # a disabled terminal takes no punches
        await asyncio.to_thread(conn.clear_attendance)
        assert emu.record_count == 0
        await asyncio.to_thread(conn.enable_device)
        assert emu.enabled is True
        await asyncio.to_thread(conn.restart)
        await wait_until_async(lambda: emu.counters.restarts == 1 and not emu.session_active, timeout=10)
        # While it reboots nothing listens; afterwards a new session works.
        await wait_until_async(lambda: emu.tcp_port is not None, timeout=5)
        again = await asyncio.to_thread(lambda: pyzk(emu).connect())
        assert await asyncio.to_thread(again.get_serialnumber) == emu.serial_number
        await asyncio.to_thread(again.disconnect)


async def test_user_write_and_delete_over_tcp() -> None:
    async with ZkEmulator(profile="tft") as emu:

        def session() -> list[str]:
            conn = pyzk(emu).connect()
            try:
                conn.set_user(uid=7, name="Zoe", privilege=0, password="99", user_id="7007", card=1234)
                conn.set_user(uid=8, name="Yan", user_id="8008")
                conn.delete_user(uid=8)
                return [u.user_id for u in conn.get_users()]
            finally:
                conn.disconnect()

        assert await asyncio.to_thread(session) == ["7007"]
        (user,) = emu.users
        assert (user.uid, user.name, user.password, user.card) == (7, "Zoe", "99", 1234)


async def test_second_tcp_client_waits_until_the_first_leaves() -> None:
    async with ZkEmulator(profile="tft") as emu:
        first = await asyncio.to_thread(lambda: pyzk(emu).connect())
        with pytest.raises(ZKNetworkError):
            await asyncio.to_thread(lambda: pyzk(emu, timeout=1).connect())
        await asyncio.to_thread(first.disconnect)
        second = await asyncio.to_thread(lambda: pyzk(emu).connect())
        assert await asyncio.to_thread(second.get_serialnumber) == emu.serial_number
        await asyncio.to_thread(second.disconnect)
