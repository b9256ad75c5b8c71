"""Shared helpers for the ZK emulator tests: the captured vectors and a raw protocol client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from punchgate.drivers.zk import protocol as p
from punchgate.drivers.zk.emulator import ZkEmulator

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "zk_vectors.json"


def load_vectors() -> dict[str, dict[str, Any]]:
    return {v["id"]: v for v in json.loads(VECTORS_PATH.read_text())}


VECTORS = load_vectors()


def vector_bytes(vector_id: str) -> bytes:
    entry = VECTORS[vector_id]
    return bytes.fromhex(entry.get("hex_completed", entry["hex"]))


def vector_packet(vector_id: str) -> bytes:
    """The bare ZK packet of a vector (envelope removed for TCP frames)."""
    raw = vector_bytes(vector_id)
    return p.tcp_unwrap(raw) if VECTORS[vector_id]["framing"] == "tcp-envelope" else raw


class RawTcpClient:
    """A minimal ZK client over real TCP, used to replay captured frames byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reassembler = p.TcpReassembler()
        self.packets: list[bytes] = []
        self.session = 0
        self.reply = 0

    @classmethod
    async def open(cls, port: int) -> RawTcpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_packet(self, packet: bytes) -> None:
        await self.send_raw(p.tcp_wrap(packet))

    async def read_packet(self, timeout: float = 5.0) -> bytes:
        """The next bare packet the terminal sends."""
        while not self.packets:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                raise ConnectionError("terminal closed the connection")
            self.packets += self.reassembler.feed(data)
        return self.packets.pop(0)

    async def command(self, command: int, data: bytes = b"", timeout: float = 5.0) -> p.ZkPacket:
        """Send one command with the next reply number and return the decoded answer."""
        self.reply = (self.reply + 1) % p.USHRT_MAX
        await self.send_packet(p.build_packet(command, self.session, self.reply, data))
        return p.parse_packet(await self.read_packet(timeout))

    async def connect(self, comm_key: int = 0) -> p.ZkPacket:
        self.reply = 0
        await self.send_packet(p.build_packet(p.CMD_CONNECT, 0, 0))
        answer = p.parse_packet(await self.read_packet())
        self.session = answer.session
        if answer.command == p.CMD_ACK_UNAUTH:
            return await self.command(p.CMD_AUTH, p.comm_key_hash(comm_key, self.session))
        return answer

    async def read_table(self, request: p.BufferRequest) -> bytes:
        """PREPARE_BUFFER, then READ_BUFFER chunks, FREE_DATA: the whole data set."""
        first = await self.command(p.CMD_PREPARE_BUFFER, p.encode_buffer_request(request))
        if first.command == p.CMD_DATA:
            return first.data
        assert first.command == p.CMD_ACK_OK, first
        size = p.decode_buffer_ready(first.data)
        data = b""
        while len(data) < size:
            want = min(0xFFC0, size - len(data))
            prepared = await self.command(p.CMD_READ_BUFFER, p.encode_read_buffer(len(data), want))
            assert prepared.command == p.CMD_PREPARE_DATA, prepared
            total, _ = p.decode_prepare_data(prepared.data)
            got = b""
            while True:
                packet = p.parse_packet(await self.read_packet())
                if packet.command == p.CMD_ACK_OK:
                    break
                assert packet.command == p.CMD_DATA
                got += packet.data
            assert len(got) == total
            data += got
        await self.command(p.CMD_FREE_DATA)
        return data

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
async def tft() -> AsyncIterator[ZkEmulator]:
    emulator = ZkEmulator(profile="tft", serial_number="TFT0001", restart_downtime=0.2)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


def le32(value: int) -> bytes:
    return struct.pack("<I", value)
