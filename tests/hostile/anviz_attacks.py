"""What a hostile or broken Anviz peer sends: floods, lies about LEN, frames for someone else,
random bytes, and mutations of real frames (a hypothesis strategy).

Each attack is a behaviour for the peers of tests/hostile/common.py. They are bounded: by
`ATTACK_SECONDS` and by a byte budget, so that nothing runs on after its test.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass

from hypothesis import strategies as st

from punchgate.drivers.anviz import codec
from punchgate.drivers.anviz.codec import FrameDecoder, Request, Response
from punchgate.drivers.anviz.emulator import EmulatedTerminal
from tests.hostile.common import Behaviour, send_for

ATTACK_SECONDS = 8.0  # longer than any driver call under attack takes
ATTACK_BYTES = 64 * 1024 * 1024
DEVICE_ID = 1  # the terminal the driver under attack asks
OTHER_ID = 99  # somebody else on the line


def flood(byte: int = codec.STX, chunk: int = 4096) -> Behaviour:
    """The same byte, as fast as the other side takes it."""
    data = bytes([byte]) * chunk

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send_for(writer, lambda: data, seconds=ATTACK_SECONDS, max_bytes=ATTACK_BYTES)

    return behaviour


def huge_length_then_trickle(header: bytes, pause: float = 0.02) -> Behaviour:
    """The answer to the first request: a header announcing a long frame, then its 'data' one
    byte at a time, slower than a terminal would but faster than the line's quiet time."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(header)
        await send_for(writer, lambda: b"\x00", seconds=ATTACK_SECONDS, max_bytes=1 << 20, pause=pause)

    return behaviour


def random_bytes(seed: int, chunk: int = 4096) -> Behaviour:
    rng = random.Random(seed)

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send_for(writer, lambda: rng.randbytes(chunk), seconds=ATTACK_SECONDS, max_bytes=ATTACK_BYTES)

    return behaviour


def endless_frames(frames: list[bytes], batch: int = 64) -> Behaviour:
    """Valid frames, CRC and all, over and over: none of them the reply the driver waits for."""
    cycle = itertools.cycle(frames)

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await send_for(
            writer,
            lambda: b"".join(next(cycle) for _ in range(batch)),
            seconds=ATTACK_SECONDS,
            max_bytes=ATTACK_BYTES,
        )

    return behaviour


def never_reading(inner: Behaviour) -> Behaviour:
    """`inner`, from a peer that stops reading what it is sent."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()  # type: ignore[attr-defined]  # a socket transport
        await inner(reader, writer)

    return behaviour


def other_devices_frames() -> list[bytes]:
    """Frames a shared line or a confused peer carries that are not our terminal's answer."""
    info = codec.RecordInfo(1, 2, 3, 4, 5, 6).encode()
    return [
        Response(OTHER_ID, codec.CMD_GET_RECORD_INFO | 0x80, codec.RET_SUCCESS, info).encode(),
        Request(OTHER_ID, codec.CMD_GET_RECORD_INFO).encode(),  # another host polling
        Response(DEVICE_ID, codec.CMD_GET_TIME | 0x80, codec.RET_SUCCESS, bytes(6)).encode(),  # not asked
    ]


def pushes(count: int = 50) -> list[bytes]:
    """Real-time record pushes from our own terminal."""
    records = [codec.Record(1000 + i, 0x32315785 + i, 1, 0) for i in range(count)]
    return [
        Response(DEVICE_ID, codec.ACK_REALTIME_RECORD, codec.RET_SUCCESS, r.encode()).encode()
        for r in records
    ]


def heartbeats() -> list[bytes]:
    return [Request(DEVICE_ID, codec.CMD_HEARTBEAT).encode()]


# ---- answering with mutated frames ----------------------------------------------------------


@dataclass(slots=True)
class MutatingTerminal:
    """Answers each request as `terminal` would, but sends `prefix` (set per example) first."""

    terminal: EmulatedTerminal
    prefix: bytes = b""
    requests: int = 0

    def behaviour(self) -> Behaviour:
        async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = FrameDecoder()
            while chunk := await reader.read(4096):
                for item in decoder.feed(chunk):
                    if isinstance(item, Request):
                        self.requests += 1
                        writer.write(self.prefix + b"".join(self.terminal.handle(item)))
                await writer.drain()

        return behaviour


def real_frames() -> list[bytes]:
    """Frames as terminals and hosts send them: the captured vectors and the emulator's replies."""
    terminal = EmulatedTerminal(DEVICE_ID)
    terminal.add_history(30)
    requests = [
        Request(DEVICE_ID, codec.CMD_GET_RECORD_INFO),
        codec.download_request(DEVICE_ID, codec.DOWNLOAD_NEW_FROM_START, 25),  # 362-byte reply
        Request(DEVICE_ID, codec.CMD_GET_CONFIG1),
        Request(DEVICE_ID, codec.CMD_GET_SERIAL),
        codec.clear_request(DEVICE_ID, codec.CLEAR_NEW_FLAG_COUNT, 3),
    ]
    replies = [frame for request in requests for frame in terminal.handle(request)]
    return [r.encode() for r in requests] + replies + pushes(1) + heartbeats()


REAL_FRAMES = real_frames()


@st.composite
def mutated_frame(draw: st.DrawFn) -> bytes:
    """A real frame with one to four mutations: bytes flipped, set, inserted, deleted, repeated,
    start bytes inserted, LEN rewritten, or the frame cut short."""
    frame = bytearray(draw(st.sampled_from(REAL_FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(frame)))
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "repeat", "stx", "len", "cut"]))
        if kind == "flip" and position < len(frame):
            frame[position] ^= draw(st.integers(1, 255))
        elif kind == "set" and position < len(frame):
            frame[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            frame[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del frame[position : position + draw(st.integers(1, 16))]
        elif kind == "repeat":
            frame[position:position] = frame[position : position + draw(st.integers(1, 32))]
        elif kind == "stx":
            frame[position:position] = bytes([codec.STX]) * draw(st.integers(1, 8))
        elif kind == "len" and len(frame) >= 9:
            offset = 7 if frame[5] >= 0x80 else 6
            frame[offset : offset + 2] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif kind == "cut":
            del frame[position:]
    return bytes(frame)


def mutated_stream() -> st.SearchStrategy[bytes]:
    """One to three mutated frames, possibly with real frames between them."""
    piece = st.one_of(mutated_frame(), mutated_frame(), st.sampled_from(REAL_FRAMES))
    return st.lists(piece, min_size=1, max_size=3).map(b"".join)


def holds_answer(data: bytes, ack: int, device_id: int = DEVICE_ID) -> bool:
    """Whether `data` on its own already holds a valid frame that answers with `ack`."""
    return any(
        isinstance(item, Response) and item.ack == ack and item.device_id == device_id
        for item in FrameDecoder().feed(data)
    )
