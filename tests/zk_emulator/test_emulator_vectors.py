"""Replay captured client frames at the emulator over real sockets and compare its answers
with the captured terminal frames, byte for byte where the frame is deterministic."""

from __future__ import annotations

import asyncio
import datetime as dt

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator import ZkEmulator
from tests.support.waiting import wait_until_async
from tests.zk_emulator.conftest import RawTcpClient, vector_bytes, vector_packet


async def test_connect_and_exit_match_capture_tcp() -> None:
    async with ZkEmulator(profile="tft", session_ids=[0xFB2F]) as emu:
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        await client.send_raw(vector_bytes("pyzk-connect-req"))
        assert await client.read_packet() == vector_packet("pyzk-connect-ack")
        await client.send_raw(vector_bytes("pyzk-exit-req"))
        exit_ack = p.parse_packet(await client.read_packet())
        assert (exit_ack.command, exit_ack.session, exit_ack.reply) == (p.CMD_ACK_OK, 0xFB2F, 1)
        await client.close()
        await wait_until_async(lambda: not emu.session_active, timeout=10)


async def test_connect_matches_capture_udp() -> None:
    async with ZkEmulator(profile="tft", session_ids=[0xFB2F]) as emu:
        loop = asyncio.get_running_loop()
        received: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                received.put_nowait(data)

        udp_port = emu.udp_port
        assert udp_port is not None
        transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", udp_port))
        try:
            transport.sendto(vector_bytes("pyzk-connect-req-udp"))
            assert await asyncio.wait_for(received.get(), 5) == vector_bytes("pyzk-connect-ack-udp")
            transport.sendto(vector_bytes("pyzk-exit-req-udp"))
            answer = p.parse_packet(await asyncio.wait_for(received.get(), 5))
            assert (answer.command, answer.reply) == (p.CMD_ACK_OK, 1)
            await wait_until_async(lambda: not emu.session_active, timeout=10)
        finally:
            transport.close()


async def test_comm_key_exchange_matches_capture() -> None:
    async with ZkEmulator(profile="tft", comm_key=45, session_ids=[0x45CF]) as emu:
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        await client.send_raw(vector_bytes("pyzk-connect-req"))
        assert await client.read_packet() == vector_packet("pyzk-auth-unauth")
        await client.send_raw(vector_bytes("pyzk-auth-key12-req"))
        assert await client.read_packet() == vector_packet("pyzk-auth-key12-rejected")
        assert emu.counters.auth_failures == 1
        await client.send_raw(vector_bytes("pyzk-auth-key45-req"))
        assert await client.read_packet() == vector_packet("pyzk-auth-key45-ok")
        await client.send_raw(vector_bytes("pyzk-freesizes-req"))
        sizes = p.parse_packet(await client.read_packet())
        assert (sizes.command, sizes.session, sizes.reply) == (p.CMD_ACK_OK, 0x45CF, 2)
        assert p.decode_free_sizes(sizes.data).record_capacity == emu.data.record_capacity
        await client.close()


async def test_options_match_capture() -> None:
    async with ZkEmulator(profile="tft", platform="ZEM760_TFT", session_ids=[0x8DF3]) as emu:
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        await client.connect()
        await client.send_raw(vector_bytes("adro-options-platform-req"))
        assert await client.read_packet() == vector_packet("adro-options-platform-reply")
        await client.send_raw(vector_bytes("adro-options-workcode-req"))
        assert await client.read_packet() == vector_packet("adro-options-workcode-reply")
        await client.send_packet(vector_bytes("adro-chk-vector-1"))  # ZKFaceVersion, bare in the capture
        face = p.parse_packet(await client.read_packet())
        assert (face.command, face.reply) == (p.CMD_ACK_OK, 3)
        assert p.decode_option_reply(face.data)[0] == "ZKFaceVersion"
        unknown = await client.command(p.CMD_OPTIONS_RRQ, p.encode_option_request("NoSuchKey"))
        assert unknown.command == p.CMD_ACK_ERROR
        await client.close()


async def test_option_write_and_user_write_from_captures() -> None:
    async with ZkEmulator(profile="tft", session_ids=[0xC584, 0x8A9D]) as emu:
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        await client.connect()
        await client.send_raw(vector_bytes("adro-options-set-lockon"))
        assert p.parse_packet(await client.read_packet()).command == p.CMD_ACK_OK
        assert emu.option("LockOn") == "5"
        await client.connect()  # second capture was on another session
        await client.send_raw(vector_bytes("adro-user-wrq"))
        answer = p.parse_packet(await client.read_packet())
        assert (answer.command, answer.reply) == (p.CMD_ACK_OK, 92)
        (user,) = emu.users
        assert (user.uid, user.user_id, user.name, user.card, user.privilege) == (
            14,
            "11224488",
            "Nuevo",
            6543,
            6,
        )
        await client.close()


async def test_direct_user_reply_matches_capture() -> None:
    captured = p.parse_packet(vector_packet("pyzk-users-direct-7"))
    async with ZkEmulator(profile="tft", session_ids=[0x6396]) as emu:
        for user in p.decode_user_set(captured.data, 7):
            emu.data.put_user(user)
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        await client.connect()
        request = p.encode_buffer_request(p.BufferRequest(p.CMD_USERTEMP_RRQ, p.FCT_USER))
        await client.send_packet(p.build_packet(p.CMD_PREPARE_BUFFER, 0x6396, 21, request))
        assert await client.read_packet() == vector_packet("pyzk-users-direct-7")
        await client.close()


async def test_buffered_user_read_matches_capture_chunk_for_chunk() -> None:
    chunks = [p.parse_packet(vector_packet(f"pyzk-70u-data-{i}")) for i in range(6)]
    captured = p.decode_user_set(b"".join(c.data for c in chunks), 70)
    # The captured table has empty slots (no user id); enrol others in their place
    # so the data set has the captured size: 70 x 72 bytes.
    users = [u for u in captured if u.user_id]
    users += [p.UserRecord(uid=900 + n, user_id=f"90{n}") for n in range(70 - len(users))]
    async with ZkEmulator(profile="tft", session_ids=[0x3C5C]) as emu:
        for user in users:
            emu.data.put_user(user)
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        await client.connect()
        request = p.encode_buffer_request(p.BufferRequest(p.CMD_USERTEMP_RRQ, p.FCT_USER))
        await client.send_packet(p.build_packet(p.CMD_PREPARE_BUFFER, 0x3C5C, 21, request))
        ready = p.parse_packet(await client.read_packet())
        expected_ready = p.parse_packet(vector_packet("pyzk-70u-prepbuf-ack"))
        assert (ready.command, ready.session, ready.reply) == (p.CMD_ACK_OK, 0x3C5C, 21)
        assert ready.data[:9] == expected_ready.data[:9]  # the last 4 bytes are unexplained
        await client.send_packet(p.build_packet(p.CMD_READ_BUFFER, 0x3C5C, 22, p.encode_read_buffer(0, 5044)))
        assert await client.read_packet() == vector_packet("pyzk-70u-prepare-data")
        body = b""
        for expected in chunks:
            got = p.parse_packet(await client.read_packet())
            assert (got.command, got.session, got.reply, len(got.data)) == (
                expected.command,
                expected.session,
                expected.reply,
                len(expected.data),
            )
            body += got.data
        assert {u.user_id for u in p.decode_user_set(body, 70)} == {u.user_id for u in users}
        closing = p.parse_packet(await client.read_packet())
        assert (closing.command, closing.session, closing.reply) == (p.CMD_ACK_OK, 5, 22)
        await client.send_raw(vector_bytes("pyzk-70u-freedata-req"))
        assert p.parse_packet(await client.read_packet()).command == p.CMD_ACK_OK
        await client.close()


async def test_two_chunk_transfer_matches_template_capture_framing() -> None:
    async with ZkEmulator(profile="tft", session_ids=[0x98D0]) as emu:
        emu.generate_log(records=40, days=2, users=3, seed=1)  # 1604-byte data set: staged
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        await client.connect()
        ready = await client.command(p.CMD_PREPARE_BUFFER, p.encode_buffer_request(p.BufferRequest(13, 0)))
        assert p.decode_buffer_ready(ready.data) == 4 + 40 * 40
        await client.send_packet(p.build_packet(p.CMD_READ_BUFFER, 0x98D0, 50, p.encode_read_buffer(0, 1244)))
        assert await client.read_packet() == vector_packet("pyzk-tpl1-prepare-data")
        assert len(p.parse_packet(await client.read_packet()).data) == 1008
        assert len(p.parse_packet(await client.read_packet()).data) == 236
        assert await client.read_packet() == vector_packet("pyzk-tpl1-final-ack")
        await client.close()


async def test_state_and_pin_width_match_capture() -> None:
    async with ZkEmulator(profile="tft", session_ids=[0x0001, 0x3C5C]) as emu:
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        await client.connect()
        await client.send_packet(p.build_packet(p.CMD_STATE_RRQ, 0x0001, 55))
        assert await client.read_packet() == vector_packet("adro-state-reply")
        await client.connect()
        await client.send_packet(p.build_packet(p.CMD_GET_PINWIDTH, 0x3C5C, 16, b" P"))
        assert await client.read_packet() == vector_packet("pyzk-70u-ack-1byte")
        await client.close()


async def test_live_event_matches_capture() -> None:
    async with ZkEmulator(profile="tft") as emu:
        emu.add_user("999111333")
        assert emu.tcp_port is not None
        client = await RawTcpClient.open(emu.tcp_port)
        await client.connect()
        assert (
            await client.command(p.CMD_REG_EVENT, p.encode_read_buffer(0xFFFF, 0)[:4])
        ).command == p.CMD_ACK_OK
        emu.add_punch("999111333", dt.datetime(2018, 6, 25, 17, 41, 5), state=0, verify=1)
        assert await client.read_packet() == vector_packet("adro-live-attlog-32")
        await client.close()
