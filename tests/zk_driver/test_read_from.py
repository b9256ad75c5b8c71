"""The ZK driver's tail read (`ZkDriver.read_records_from`): READ_BUFFER from a record's offset
returns exactly the log's records from there on, over TCP and UDP, for 40- and 16-byte logs;
it declines (None) for a record size the log does not have, for 8-byte logs (two layouts),
and for an index past the end of the log."""

from __future__ import annotations

from typing import Any

import pytest

from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.emulator import dispatch
from punchgate.drivers.zk.emulator.replies import ack
from tests.zk_driver.conftest import EmulatorFactory, terminal_config
from tests.zk_driver.test_pyzk_bugs import as_tuples


@pytest.mark.parametrize(("profile", "transport"), [("tft", "tcp"), ("tft", "udp"), ("bw", "udp")])
async def test_the_tail_is_the_end_of_the_whole_log(
    start_emulator: EmulatorFactory, open_driver: Any, profile: str, transport: str
) -> None:
    emulator = await start_emulator(profile=profile, serial_number="TAIL000001")
    emulator.generate_log(3000, days=20, users=30, seed=4)
    driver = await open_driver(terminal_config(emulator, transport))
    size = emulator.profile.attendance_record_size
    wrong = 16 if size == 40 else 40
    assert await driver.read_records_from(10, wrong) is None, "a tail at a size the log does not have"
    whole = await driver.read_records()
    early = await driver.read_records_from(2990, size)  # a session's first read may be a tail
    assert early is not None and [r.raw for r in early] == [r.raw for r in whole[2990:]]
    for user in ("1", "2", "3"):
        emulator.add_punch(user)
    tail = await driver.read_records_from(len(whole) - 1, size)
    again = await driver.read_records()
    assert tail is not None and len(tail) == 4
    assert as_tuples(tail) == as_tuples(again[len(whole) - 1 :])
    assert [r.raw for r in tail] == [r.raw for r in again[len(whole) - 1 :]]
    assert await driver.read_records_from(len(again), size) is None, "no record there"
    assert await driver.read_records_from(0, wrong) is None, "a whole read showed another size"
    small = await driver.read_records_from(0, size)  # the whole log the tail way: the same records
    assert small is not None and as_tuples(small) == as_tuples(again)


async def test_eight_byte_logs_are_always_read_whole(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="bw8", serial_number="TAIL000008")
    emulator.generate_log(200, days=5, users=10, seed=5)
    driver = await open_driver(terminal_config(emulator, "udp"))
    whole = await driver.read_records()
    assert len(whole) == 200
    assert await driver.read_records_from(100, 8) is None


async def test_a_small_log_sent_at_once_is_cut_at_the_record(
    start_emulator: EmulatorFactory, open_driver: Any
) -> None:
    emulator = await start_emulator(profile="tft", serial_number="TAIL000010")
    emulator.generate_log(10, days=2, users=5, seed=6)  # 404 bytes: one CMD_DATA, no READ_BUFFER
    driver = await open_driver(terminal_config(emulator))
    whole = await driver.read_records()
    emulator.add_punch("2")
    tail = await driver.read_records_from(9, 40)
    assert tail is not None and [r.raw for r in tail] == [r.raw for r in (await driver.read_records())[9:]]
    assert tail[0].raw == whole[9].raw


async def test_a_terminal_refusing_offset_reads_is_read_whole_from_then_on(
    start_emulator: EmulatorFactory, open_driver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Firmware that answers a READ_BUFFER not starting at 0 with ACK_ERROR: the tail read says
    None (the caller reads whole), the session stays usable, and no tail is tried again."""
    real = dispatch.COMMAND_HANDLERS[zp.CMD_READ_BUFFER]

    def refuse_offsets(ctx: Any, session: Any, packet: zp.ZkPacket, link: Any) -> Any:
        if zp.decode_read_buffer(packet.data)[0] != 0:
            asked.append(packet)
            return ack(session.id, packet, code=zp.CMD_ACK_ERROR)
        return real(ctx, session, packet, link)

    asked: list[zp.ZkPacket] = []
    monkeypatch.setitem(dispatch.COMMAND_HANDLERS, zp.CMD_READ_BUFFER, refuse_offsets)
    emulator = await start_emulator(profile="tft", serial_number="TAIL000099")
    emulator.generate_log(500, days=5, users=10, seed=7)
    driver = await open_driver(terminal_config(emulator))
    whole = await driver.read_records()
    emulator.add_punch("1")
    assert await driver.read_records_from(len(whole) - 1, 40) is None
    assert len(asked) == 1
    assert len(await driver.read_records()) == 501  # the session is still in step
    assert await driver.read_records_from(len(whole), 40) is None
    assert len(asked) == 1, "a tail was tried again on a terminal that refused one"
