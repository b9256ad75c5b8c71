"""Every injectable fault, observed through a raw client over real loopback sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import socket
import struct

import pytest

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.waiting import wait_until_async
from tests.zk_emulator.conftest import RawTcpClient

ATTLOG = p.BufferRequest(p.CMD_ATTLOG_RRQ, 0)


async def connected(emu: ZkEmulator) -> RawTcpClient:
    assert emu.tcp_port is not None
    client = await RawTcpClient.open(emu.tcp_port)
    assert (await client.connect()).command == p.CMD_ACK_OK
    return client


async def test_unknown_fault_or_parameter_is_a_clear_error(tft: ZkEmulator) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        await tft.set_fault("melt")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="allowed: delay"):
        await tft.set_fault("slow_replies", seconds=3)


async def test_refuse_connections_then_recover(tft: ZkEmulator) -> None:
    port = tft.tcp_port
    assert port is not None
    await tft.set_fault("refuse_connections")
    assert tft.tcp_port is None
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    # Nothing listens, and nothing else may take the port meanwhile: a process binding it
    # would be the "terminal" the gateway reaches at that address.
    with socket.socket() as intruder, pytest.raises(OSError) as refused:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        intruder.bind(("127.0.0.1", port))
        intruder.listen()
    assert refused.value.errno == errno.EADDRINUSE
    await tft.clear_fault("refuse_connections")
    assert tft.tcp_port == port
    client = await connected(tft)
    await client.close()


async def test_hang_accepts_but_never_answers(tft: ZkEmulator) -> None:
    await tft.set_fault("hang")
    assert tft.tcp_port is not None
    client = await RawTcpClient.open(tft.tcp_port)
    await client.send_packet(p.build_packet(p.CMD_CONNECT, 0, 0))
    with pytest.raises(TimeoutError):
        await client.read_packet(timeout=0.5)
    await client.close()


async def test_slow_replies(tft: ZkEmulator) -> None:
    client = await connected(tft)
    await tft.set_fault("slow_replies", delay=0.6)
    with pytest.raises(TimeoutError):
        await client.command(p.CMD_GET_TIME, timeout=0.2)
    answer = p.parse_packet(await client.read_packet(timeout=5))  # it does come, late
    assert answer.command == p.CMD_ACK_OK
    await client.close()


async def test_garbage_and_truncated_replies_then_normal(tft: ZkEmulator) -> None:
    client = await connected(tft)
    await tft.set_fault("garbage_replies", count=1)
    client.reply += 1
    await client.send_packet(p.build_packet(p.CMD_GET_TIME, client.session, client.reply))
    data = await asyncio.wait_for(client.reader.read(65536), 5)
    assert data and not data.startswith(p.TCP_MAGIC)
    assert "garbage_replies" not in tft.active_faults  # spent
    await client.close()
    client = await connected(tft)
    await tft.set_fault("truncated_replies", count=1)
    client.reply += 1
    await client.send_packet(p.build_packet(p.CMD_GET_TIME, client.session, client.reply))
    data = await asyncio.wait_for(client.reader.read(65536), 5)
    assert data.startswith(p.TCP_MAGIC)
    assert len(data) < struct.unpack_from("<I", data, 4)[0] + 8  # envelope promises more
    await client.close()


async def test_drop_mid_transfer_closes_the_connection(tft: ZkEmulator) -> None:
    tft.generate_log(records=500, days=3, users=5)
    await tft.set_fault("drop_mid_transfer", after_packets=3)
    client = await connected(tft)
    with pytest.raises(ConnectionError):
        await client.read_table(ATTLOG)
    await client.close()
    await wait_until_async(lambda: not tft.session_active, timeout=10)


async def test_short_read_misreports_counts(tft: ZkEmulator) -> None:
    tft.generate_log(records=300, days=3, users=5)
    await tft.set_fault("short_read", missing=2)
    client = await connected(tft)
    sizes = p.decode_free_sizes((await client.command(p.CMD_GET_FREE_SIZES)).data)
    data = await client.read_table(ATTLOG)
    assert sizes.records == 300
    assert (len(data) - 4) // 40 == 298
    with pytest.raises(p.ZkFrameError):
        p.decode_attendance_set(data, sizes.records)
    await client.close()


async def test_comm_key_changed_gives_ack_unauth() -> None:
    async with ZkEmulator(profile="tft", comm_key=10) as emu:
        await emu.set_fault("comm_key_changed", key=11)
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        assert (await client.connect(comm_key=10)).command == p.CMD_ACK_UNAUTH
        assert (await client.command(p.CMD_GET_TIME)).command == p.CMD_ACK_UNAUTH  # still locked out
        assert (await client.connect(comm_key=11)).command == p.CMD_ACK_OK
        await client.close()


async def test_dead_battery_and_drift_then_restore(tft: ZkEmulator) -> None:
    client = await connected(tft)
    await tft.set_fault("dead_battery")
    reply = await client.command(p.CMD_GET_TIME)
    assert p.decode_time(struct.unpack("<I", reply.data)[0]).year == 2000
    await tft.clear_fault("dead_battery")
    await tft.set_fault("clock_drift", offset=600, rate=0.0)
    reply = await client.command(p.CMD_GET_TIME)
    ahead = p.decode_time(struct.unpack("<I", reply.data)[0]) - dt.datetime.now()
    assert 590 <= ahead.total_seconds() <= 610
    await tft.clear_fault("clock_drift")
    assert abs((tft.now() - dt.datetime.now()).total_seconds()) < 2
    await client.close()


async def test_log_full_refuses_punches(tft: ZkEmulator) -> None:
    tft.generate_log(records=20, days=1, users=2)
    await tft.set_fault("log_full")
    client = await connected(tft)
    sizes = p.decode_free_sizes((await client.command(p.CMD_GET_FREE_SIZES)).data)
    assert (sizes.records, sizes.record_capacity, sizes.records_free) == (20, 20, 0)
    assert tft.add_punch("1") is None
    assert tft.counters.punches_refused == 1
    await tft.clear_fault("log_full")
    assert tft.add_punch("1") is not None
    await client.close()


async def test_log_cleared_behind_our_back(tft: ZkEmulator) -> None:
    tft.generate_log(records=20, days=1, users=2)
    await tft.set_fault("log_cleared")
    assert tft.record_count == 0
    assert "log_cleared" not in tft.active_faults  # one-shot


async def test_serial_changed(tft: ZkEmulator) -> None:
    client = await connected(tft)
    await tft.set_fault("serial_changed", serial="NEW999")
    reply = await client.command(p.CMD_OPTIONS_RRQ, p.encode_option_request("~SerialNumber"))
    assert p.decode_option_reply(reply.data) == ("~SerialNumber", "NEW999")
    await tft.clear_fault("serial_changed")
    assert tft.serial_number == "TFT0001"
    await client.close()


async def test_stays_disabled_after_session(tft: ZkEmulator) -> None:
    client = await connected(tft)
    await client.command(p.CMD_DISABLEDEVICE)
    await client.command(p.CMD_EXIT)
    await wait_until_async(lambda: not tft.session_active, timeout=10)
    assert tft.enabled is True  # normal terminals re-enable when the session ends
    await tft.set_fault("stays_disabled")
    client = await connected(tft)
    await client.command(p.CMD_DISABLEDEVICE)
    await client.close()
    await wait_until_async(lambda: not tft.session_active, timeout=10)
    assert tft.enabled is False


async def test_silent_restart_drops_session_and_live_stream(tft: ZkEmulator) -> None:
    tft.add_user("5")
    client = await connected(tft)
    await client.command(p.CMD_REG_EVENT, struct.pack("<I", p.EF_ATTLOG))
    tft.add_punch("5")
    event = p.parse_packet(await client.read_packet())
    assert (event.command, event.session) == (p.CMD_REG_EVENT, p.EF_ATTLOG)
    await tft.set_fault("restart", silent=True)
    assert not tft.session_active
    tft.add_punch("5")
    with pytest.raises(TimeoutError):  # the connection stays open but nothing comes
        await client.read_packet(timeout=0.5)
    assert tft.record_count == 2
    await client.close()
    fresh = await connected(tft)  # a new session works at once
    await fresh.close()


async def test_bad_checksum_and_garbage_are_counted_and_the_session_carries_on(tft: ZkEmulator) -> None:
    client = await connected(tft)
    bad = bytearray(p.build_packet(p.CMD_GET_TIME, client.session, 77))
    bad[2] ^= 0x55
    await client.send_packet(bytes(bad))
    await client.send_raw(b"this is not a zk frame")
    answer = await client.command(p.CMD_GET_TIME)
    assert (answer.command, answer.reply) == (p.CMD_ACK_OK, client.reply)
    assert tft.counters.bad_checksum_count == 1
    assert tft.counters.garbage_count == 1
    await client.close()


async def test_live_event_never_splits_a_pending_reply(tft: ZkEmulator) -> None:
    tft.add_user("1")
    tft.generate_log(records=3000, days=5, users=1)
    client = await connected(tft)
    await client.command(p.CMD_REG_EVENT, struct.pack("<I", p.EF_ATTLOG))
    ready = await client.command(p.CMD_PREPARE_BUFFER, p.encode_buffer_request(ATTLOG))
    size = p.decode_buffer_ready(ready.data)
    client.reply += 1
    await client.send_packet(
        p.build_packet(p.CMD_READ_BUFFER, client.session, client.reply, p.encode_read_buffer(0, size))
    )
    await wait_until_async(lambda: tft._session is not None and tft._session.busy, timeout=10, interval=0.01)
    tft.add_punch("1")  # while the paced transfer is still going out
    kinds: list[int] = []
    while not kinds or kinds[-1] != p.CMD_REG_EVENT:
        kinds.append(p.parse_packet(await client.read_packet()).command)
    # PREPARE_DATA, every DATA chunk, the closing ACK_OK, and only then the event.
    assert kinds[0] == p.CMD_PREPARE_DATA
    assert kinds[-2:] == [p.CMD_ACK_OK, p.CMD_REG_EVENT]
    assert set(kinds[1:-2]) == {p.CMD_DATA}
    await client.close()


async def test_second_udp_client_is_ignored_while_a_session_is_open() -> None:
    async with ZkEmulator(profile="bw") as emu:
        loop = asyncio.get_running_loop()
        inboxes: list[asyncio.Queue[bytes]] = [asyncio.Queue(), asyncio.Queue()]
        udp_port = emu.udp_port
        assert udp_port is not None
        transports = []
        for inbox in inboxes:

            class Client(asyncio.DatagramProtocol):
                def datagram_received(
                    self, data: bytes, addr: object, inbox: asyncio.Queue[bytes] = inbox
                ) -> None:
                    inbox.put_nowait(data)

            transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", udp_port))
            transports.append(transport)
        try:
            transports[0].sendto(p.build_packet(p.CMD_CONNECT, 0, 0))
            first = p.parse_packet(await asyncio.wait_for(inboxes[0].get(), 5))
            transports[1].sendto(p.build_packet(p.CMD_CONNECT, 0, 0))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(inboxes[1].get(), 0.5)
            assert emu.counters.busy_rejections == 1
            transports[0].sendto(p.build_packet(p.CMD_EXIT, first.session, 1))
            await asyncio.wait_for(inboxes[0].get(), 5)
            transports[1].sendto(p.build_packet(p.CMD_CONNECT, 0, 0))
            assert p.parse_packet(await asyncio.wait_for(inboxes[1].get(), 5)).command == p.CMD_ACK_OK
        finally:
            for transport in transports:
                transport.close()
