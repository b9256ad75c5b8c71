"""Each known pyzk 0.9 bug, shown with bare pyzk against the emulator, then fixed by our driver.

Bare pyzk runs in a worker thread (it blocks) while the emulator serves on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from zk import ZK
from zk.exception import ZKErrorResponse, ZKNetworkError

from punchgate.drivers.base import RawPunch, UnreachableError
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.client import ZkClient
from punchgate.drivers.zk.config import ZkTerminal
from punchgate.drivers.zk.driver import ZkDriver
from punchgate.drivers.zk.emulator import ZkEmulator
from punchgate.drivers.zk.emulator.profiles import TFT
from punchgate.drivers.zk.errors import OversizedReply
from punchgate.drivers.zk.parsing import INVALID_TIME_EPOCH
from punchgate.drivers.zk.pyzk_patches import PatchedZK
from tests.hostile import fake_zk as fake
from tests.support.measure import cpu_seconds
from tests.support.waiting import wait_for_async
from tests.zk_driver.conftest import EmulatorFactory, terminal_config

# Newer (SpeedFace-style) firmware: 49-byte records and 37-byte live events.
SPEEDFACE = dataclasses.replace(
    TFT, name="speedface", attendance_record_size=49, live_event_size=37, free_sizes_length=112
)


def bare_pyzk(emulator: ZkEmulator, *, udp: bool = False, **kwargs: Any) -> Any:
    port = emulator.udp_port if udp else emulator.tcp_port
    kwargs.setdefault("ommit_ping", True)
    return ZK("127.0.0.1", port=port, timeout=2, force_udp=udp, **kwargs)


def expected_punches(emulator: ZkEmulator) -> list[tuple[str, dt.datetime | None, int, int]]:
    return [(r.user_id, r.timestamp, r.state, r.verify) for r in emulator.records]


def as_tuples(punches: list[RawPunch]) -> list[tuple[str, dt.datetime | None, int, int]]:
    return [(p.user_id, p.timestamp, p.state, p.verify) for p in punches]


async def live_punches(driver: ZkDriver, emulator: ZkEmulator, user_ids: list[str]) -> list[RawPunch]:
    """Register through live(), punch once registered, collect the punches, close the stream."""
    live = driver.live()
    assert live is not None
    got: list[RawPunch] = []
    punched = False
    try:
        async with asyncio.timeout(15):
            async for item in live:
                if not punched:  # the first tick comes after the registration
                    for user_id in user_ids:
                        emulator.add_punch(user_id, state=4, verify=15)
                    punched = True
                if item is not None:
                    got.append(item)
                    if len(got) == len(user_ids):
                        break
    finally:
        await live.aclose()
    return got


# --- the ICMP ping ---------------------------------------------------------------------


async def test_ping_before_connect_refuses_a_reachable_terminal(
    start_emulator: EmulatorFactory, open_driver: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A site where ICMP is filtered (or ping is not installed): `ping` fails, TCP works.
    calls = tmp_path / "ping-calls"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    ping = fake_bin / "ping"
    ping.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    ping.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    emulator = await start_emulator(profile="tft")

    bare = bare_pyzk(emulator, ommit_ping=False)
    with pytest.raises(ZKNetworkError, match="can't reach device"):
        await asyncio.to_thread(bare.connect)
    assert calls.read_text().count("\n") == 1

    driver = await open_driver(terminal_config(emulator))
    assert (await driver.info()).serial_number == emulator.serial_number
    assert calls.read_text().count("\n") == 1  # we never ran ping


# --- connect_ex's result ignored, UDP left unconnected ----------------------------------


async def test_connect_ex_ignored_makes_a_closed_port_look_silent(open_driver: Any) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])  # closed again once the block ends

    # pyzk's unconnected UDP socket never hears ICMP "port unreachable": it waits it out.
    bare = ZK("127.0.0.1", port=port, timeout=1, force_udp=True, ommit_ping=True)
    started = time.monotonic()
    with pytest.raises(ZKNetworkError, match="timed out"):
        await asyncio.to_thread(bare.connect)
    assert time.monotonic() - started >= 1.0

    config = ZkTerminal.model_validate(
        {"name": "zk1", "type": "zk", "host": "127.0.0.1", "port": port, "transport": "udp", "timeout": 5.0}
    )
    started = time.monotonic()
    with pytest.raises(UnreachableError, match="refused"):
        await open_driver(config)
    assert time.monotonic() - started < 1.0


# --- clear_data sends a str ------------------------------------------------------------


async def test_clear_data_str_bug_and_fix(start_emulator: EmulatorFactory) -> None:
    emulator = await start_emulator(profile="tft")
    emulator.generate_log(50, days=2, users=5)

    bare = bare_pyzk(emulator)
    await asyncio.to_thread(bare.connect)
    with pytest.raises(TypeError):
        await asyncio.to_thread(bare.clear_data)  # b"..." + "" on Python 3
    await asyncio.to_thread(bare.disconnect)
    assert emulator.record_count == 50

    fixed = PatchedZK(
        host="127.0.0.1", port=emulator.tcp_port or 0, udp=False, comm_key=0, timeout=2, encoding="utf-8"
    )
    await asyncio.to_thread(fixed.connect)
    try:
        assert await asyncio.to_thread(fixed.clear_data) is True
    finally:
        await asyncio.to_thread(fixed.disconnect)
    assert emulator.record_count == 0
    assert emulator.users == []


# --- attendance parsing assumes pyzk's record layouts ------------------------------------


async def test_zem500_eight_byte_records(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile="bw8")
    emulator.generate_log(300, days=5, users=10, seed=3)
    expected = expected_punches(emulator)

    bare = bare_pyzk(emulator, udp=True)
    await asyncio.to_thread(bare.connect)
    try:
        try:
            bare_records = await asyncio.to_thread(bare.get_attendance)
            bare_view = [(a.user_id, a.timestamp, a.punch, a.status) for a in bare_records]
            assert bare_view != expected  # time read at the wrong offset
        except ValueError:
            pass  # or the misplaced bytes make an impossible date and the whole read dies
    finally:
        await asyncio.to_thread(bare.disconnect)

    driver = await open_driver(terminal_config(emulator, "udp"))
    assert as_tuples(await driver.read_records()) == expected


async def test_49_byte_records(start_emulator: EmulatorFactory, open_driver: Any) -> None:
    emulator = await start_emulator(profile=SPEEDFACE)
    emulator.generate_log(200, days=5, users=10, seed=4)
    expected = expected_punches(emulator)

    bare = bare_pyzk(emulator)
    await asyncio.to_thread(bare.connect)
    try:
        try:
            bare_records = await asyncio.to_thread(bare.get_attendance)
            # pyzk steps 40 bytes through 49-byte records: wrong count, shifted fields.
            assert len(bare_records) != len(expected)
        except ValueError:
            pass
    finally:
        await asyncio.to_thread(bare.disconnect)

    driver = await open_driver(terminal_config(emulator))
    punches = await driver.read_records()
    assert as_tuples(punches) == expected
    assert all(len(p.raw) == 49 for p in punches)


async def test_one_invalid_date_does_not_abort_the_read(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="tft")
    emulator.generate_log(20, days=2, users=5, seed=5)
    feb_31 = ((((24 * 12 + 1) * 31 + 30) * 24 + 9) * 60) * 60  # 2024-02-31 09:00
    bad = zp.AttendanceRecord(uid=1, user_id="1", time_raw=feb_31, timestamp=None, verify=1, state=0)
    # The emulator stores its log encoded; no public call takes an impossible date, so the
    # record goes straight into that store (a terminal with a corrupt log entry).
    emulator.data._log += zp.encode_attendance(bad, 40)
    emulator.generate_log(5, days=1, users=5, seed=6)
    assert emulator.record_count == 26

    bare = bare_pyzk(emulator)
    await asyncio.to_thread(bare.connect)
    try:
        with pytest.raises(ValueError, match="day is out of range"):
            await asyncio.to_thread(bare.get_attendance)
    finally:
        await asyncio.to_thread(bare.disconnect)

    driver = await open_driver(terminal_config(emulator))
    punches = await driver.read_records()
    assert len(punches) == 26
    sentinel = [p for p in punches if p.timestamp < dt.datetime(2000, 1, 1)]
    assert len(sentinel) == 1
    assert sentinel[0].timestamp == INVALID_TIME_EPOCH + dt.timedelta(seconds=feb_31)
    assert sentinel[0].raw == zp.encode_attendance(bad, 40)


# --- a live event taken for the reply ----------------------------------------------------


async def test_event_taken_for_reply_bug_and_fix(start_emulator: EmulatorFactory) -> None:
    emulator = await start_emulator(profile="tft")
    emulator.generate_log(5, days=1, users=3)

    bare = bare_pyzk(emulator)
    await asyncio.to_thread(bare.connect)
    try:
        await asyncio.to_thread(bare.reg_event, zp.EF_ATTLOG)
        emulator.add_punch("2")
        # The event now waits in pyzk's socket.
        assert await wait_for_async(lambda: emulator.counters.events_sent >= 1, timeout=30)
        with pytest.raises(ZKErrorResponse, match="reg events 0"):
            await asyncio.to_thread(bare.reg_event, 0)  # the event was read as the reply
        with pytest.raises(ZKNetworkError):
            await asyncio.to_thread(bare.get_time)  # and the session is out of step
    finally:
        bare._ZK__sock.close()

    fixed = PatchedZK(
        host="127.0.0.1", port=emulator.tcp_port or 0, udp=False, comm_key=0, timeout=2, encoding="utf-8"
    )
    await asyncio.to_thread(fixed.connect)
    try:
        await asyncio.to_thread(fixed.reg_event, zp.EF_ATTLOG)
        sent = emulator.counters.events_sent
        emulator.add_punch("3")
        assert await wait_for_async(lambda: emulator.counters.events_sent > sent, timeout=30)
        reply = await asyncio.to_thread(fixed.exchange, zp.CMD_GET_TIME, b"", 1032)
        assert reply.command == zp.CMD_ACK_OK  # the event was acknowledged and skipped
        assert isinstance(await asyncio.to_thread(fixed.get_time), dt.datetime)  # still in step
    finally:
        fixed.sock.close()


# --- live events of other lengths ------------------------------------------------------


def _bare_live_capture(zk: Any, seconds: float) -> list[Any] | BaseException:
    deadline = time.monotonic() + seconds
    got: list[Any] = []
    try:
        for item in zk.live_capture(new_timeout=0.5):
            if item is not None:
                got.append(item)
                break
            if time.monotonic() > deadline:
                break
    except Exception as exc:
        return exc
    finally:
        zk.end_live_capture = True
    return got


@pytest.mark.parametrize(
    ("profile", "transport", "size"),
    [("bw", "udp", 14), ("bw8", "udp", 10), (SPEEDFACE, "tcp", 37)],
    ids=["bw-14", "bw8-10", "speedface-37"],
)
async def test_live_events_of_other_lengths(
    start_emulator: EmulatorFactory, open_driver: Any, profile: Any, transport: str, size: int
) -> None:
    emulator = await start_emulator(profile=profile, event_ack_timeout=0.2)
    emulator.generate_log(10, days=1, users=5)
    assert emulator.profile.live_event_size == size

    bare = bare_pyzk(emulator, udp=transport == "udp")
    await asyncio.to_thread(bare.connect)
    capture = asyncio.ensure_future(asyncio.to_thread(_bare_live_capture, bare, 3.0))
    for _ in range(3):  # a few punches, then quiet so pyzk's recv times out and it returns
        await asyncio.sleep(0.5)
        emulator.add_punch("3")
    outcome = await capture
    if size == 10:
        assert outcome == []  # pyzk skips payloads under 12 bytes: punches silently lost
    else:
        assert isinstance(outcome, UnboundLocalError)  # no branch for 14/37 bytes
    bare._ZK__sock.close()
    if transport == "udp":
        await emulator.set_fault("restart", silent=False)  # free the UDP session slot

    driver = await open_driver(terminal_config(emulator, transport))
    await driver.read_records()  # learn the log layout, as the worker does first
    got = await live_punches(driver, emulator, ["2", "4"])
    assert [(p.user_id, p.state, p.verify) for p in got] == [("2", 4, 15), ("4", 4, 15)]
    assert all(len(p.raw) == size for p in got)
    assert got[0].timestamp == emulator.records[-2].timestamp


# --- a reply read with one recv of the size pyzk expects ------------------------------------


def _patched(port: int) -> ZkClient:
    return ZkClient(host="127.0.0.1", port=port, udp=False, comm_key=0, timeout=2, encoding="utf-8")


async def test_reply_cut_at_recv_size_bug_and_fix() -> None:
    # A terminal that hands every reply over a few bytes at a time (a slow one): pyzk's single
    # recv gets the first piece, calls it "TCP packet invalid", and connect says it is no ZK
    # terminal at all.
    slow = fake.FakeTerminal(slow=0.01)
    with fake.serve(slow, "tcp") as peer:
        bare = ZK("127.0.0.1", port=peer.port, timeout=2, ommit_ping=True)
        with pytest.raises(ZKNetworkError, match="TCP packet invalid"):
            await asyncio.to_thread(bare.connect)
        bare._ZK__sock.close()
        fixed = _patched(peer.port)
        await asyncio.to_thread(fixed.connect)
        assert await asyncio.to_thread(fixed.device_enabled) is True
        await asyncio.to_thread(fixed.disconnect)

    # A 60-byte live event before the reply to DISABLEDEVICE, which pyzk reads with a 16-byte
    # recv: the event's head is taken for the reply, its tail for the next one.
    eventful = fake.FakeTerminal(attack=fake.long_event_before_short_replies)
    with fake.serve(eventful, "tcp") as peer:
        bare = ZK("127.0.0.1", port=peer.port, timeout=2, ommit_ping=True)
        await asyncio.to_thread(bare.connect)
        with pytest.raises(ZKErrorResponse, match="Can't disable device"):
            await asyncio.to_thread(bare.disable_device)
        with pytest.raises(ZKNetworkError, match="TCP packet invalid"):
            await asyncio.to_thread(bare.enable_device)  # out of step from now on
        bare._ZK__sock.close()
        fixed = _patched(peer.port)
        await asyncio.to_thread(fixed.connect)
        assert await asyncio.to_thread(fixed.disable_device) is True
        assert await asyncio.to_thread(fixed.enable_device) is True
        assert await asyncio.to_thread(fixed.device_enabled) is True
        await asyncio.to_thread(fixed.disconnect)
    events = [p for p in eventful.received if p.command == zp.CMD_ACK_OK and p.reply == 0]
    assert len(events) == 3  # the fixed client acknowledged each event it skipped


# --- an empty read after the terminal closed: pyzk spins -------------------------------------

_BARE_READ = """
import sys
from zk import ZK
zk = ZK("127.0.0.1", port=int(sys.argv[1]), timeout=2, ommit_ping=True)
zk.connect()
zk.read_with_buffer(13)
"""


async def test_eof_read_spins_forever_bug_and_fix() -> None:
    # The data set comes in an envelope announcing 2**31 bytes, then the terminal closes the
    # connection: bare pyzk loops on recv() == b"" for good. In a child process, so that the
    # spinning thread can be killed.
    with fake.serve(fake.FakeTerminal(attack=fake.huge_envelope), "tcp") as peer:
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", _BARE_READ, str(peer.port))
        try:
            spinning = await wait_for_async(lambda: cpu_seconds(child.pid) >= 1.0, timeout=20)
            assert spinning and child.returncode is None, "pyzk's read ended (or never used a core)"
        finally:
            child.kill()
            await child.wait()

        fixed = _patched(peer.port)
        await asyncio.to_thread(fixed.connect)
        started = time.monotonic()
        with pytest.raises(OversizedReply, match="2147483648-byte packet"):
            await asyncio.to_thread(fixed.read_table, zp.CMD_ATTLOG_RRQ, 0, 1 << 20)
        # pyzk's own loop, patched: the closed connection ends it at once.
        with pytest.raises(ConnectionResetError):
            await asyncio.to_thread(fixed._ZK__recieve_raw_data, 1 << 20)
        assert time.monotonic() - started < 1.0
        fixed.link.close()
