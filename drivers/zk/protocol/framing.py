"""Packets on the wire: the 8-byte header, its checksum, and the TCP envelope.

A ZK packet is an 8-byte little-endian header (command, checksum, session, reply number)
followed by data. Over UDP it travels bare; over TCP it is wrapped in an envelope
`50 50 82 7D` + u32 LE length, and `TcpReassembler` recovers packets from a byte stream
whatever the segment boundaries. Everything that knows the header or envelope layout
lives here; the payload codecs never see either.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from punchgate.drivers.zk.protocol.errors import ZkChecksumError, ZkFrameError

TCP_MAGIC: Final = b"\x50\x50\x82\x7d"
HEADER_SIZE: Final = 8
TCP_ENVELOPE_SIZE: Final = 8
USHRT_MAX: Final = 0xFFFF

# Bulk transfer chunk sizes. TCP: 1008 data bytes per CMD_DATA in every capture.
# UDP: pyzk and others read UDP data packets with a 1032-byte buffer (8 header + 1024).
TCP_DATA_CHUNK: Final = 1008
UDP_DATA_CHUNK: Final = 1024

_HEADER = struct.Struct("<4H")
_ENVELOPE = struct.Struct("<4sI")


def checksum(packet: bytes) -> int:
    """The ZK checksum of a whole packet (header + data); the checksum field counts as 0.

    Sum LE 16-bit words (an odd last byte is a low byte), fold carries back in, invert.
    """
    if len(packet) < HEADER_SIZE:
        raise ZkFrameError(f"packet shorter than the {HEADER_SIZE}-byte header", packet)
    body = packet[:2] + b"\x00\x00" + packet[4:]
    # The folded sum of the words is their sum modulo 0xFFFF, except that a sum that is a
    # nonzero multiple of 0xFFFF folds to 0xFFFF, not 0. And since 0x10000 is 1 modulo
    # 0xFFFF, the words' sum modulo 0xFFFF is the whole body read as one little-endian
    # number, modulo 0xFFFF (an odd last byte is a low byte either way): one C call instead
    # of a Python int per word, which cost about 1 ms per 100 kB of a log's transfer.
    number = int.from_bytes(body, "little")
    folded = number % 0xFFFF or (0xFFFF if number else 0)
    return ~folded & 0xFFFF


@dataclass(frozen=True, slots=True)
class ZkPacket:
    """One decoded ZK packet. `session` is not always the session id (see zk.md)."""

    command: int
    session: int
    reply: int
    data: bytes = b""
    checksum: int = 0


def build_packet(command: int, session: int, reply: int, data: bytes = b"") -> bytes:
    """Encode a bare ZK packet with a correct checksum."""
    raw = _HEADER.pack(command, 0, session & 0xFFFF, reply & 0xFFFF) + data
    chk = checksum(raw)
    return raw[:2] + struct.pack("<H", chk) + raw[4:]


def parse_packet(raw: bytes, *, verify: bool = True) -> ZkPacket:
    """Decode a bare ZK packet. Raises ZkChecksumError on a bad checksum when `verify`."""
    if len(raw) < HEADER_SIZE:
        raise ZkFrameError(f"packet of {len(raw)} bytes is shorter than the header", raw)
    command, chk, session, reply = _HEADER.unpack_from(raw)
    if verify and checksum(raw) != chk:
        raise ZkChecksumError(f"bad checksum 0x{chk:04x}, expected 0x{checksum(raw):04x}", raw)
    return ZkPacket(command, session, reply, bytes(raw[HEADER_SIZE:]), chk)


def tcp_wrap(packet: bytes) -> bytes:
    """Put a bare packet into the TCP envelope."""
    return _ENVELOPE.pack(TCP_MAGIC, len(packet)) + packet


def tcp_unwrap(frame: bytes) -> bytes:
    """Take the bare packet out of exactly one complete TCP frame."""
    if len(frame) < TCP_ENVELOPE_SIZE or frame[:4] != TCP_MAGIC:
        raise ZkFrameError("not a ZK TCP frame (missing 50 50 82 7d)", frame[:64])
    (length,) = struct.unpack_from("<I", frame, 4)
    if len(frame) - TCP_ENVELOPE_SIZE != length:
        raise ZkFrameError(f"envelope says {length} bytes, frame carries {len(frame) - 8}", frame[:64])
    return bytes(frame[TCP_ENVELOPE_SIZE:])


class TcpReassembler:
    """Turns a TCP byte stream into bare ZK packets, whatever the segment boundaries.

    Bytes that do not start with the envelope magic are skipped up to the next magic and
    handed to `on_garbage` (the stream resynchronises instead of failing for good). A length
    above `max_length` is treated as garbage too, so one corrupt header cannot make us wait
    for gigabytes.
    """

    def __init__(
        self, *, max_length: int = 1 << 24, on_garbage: Callable[[bytes], None] | None = None
    ) -> None:
        self._buffer = bytearray()
        self._max_length = max_length
        self._on_garbage = on_garbage

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete packet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every packet they complete, in order."""
        self._buffer += data
        packets: list[bytes] = []
        buf = self._buffer
        while True:
            if len(buf) >= 4 and buf[:4] != TCP_MAGIC:
                self._skip_garbage(buf.find(TCP_MAGIC, 1))
                continue
            if len(buf) < TCP_ENVELOPE_SIZE:
                # Keep a partial magic; anything else that short is still undecided.
                return packets
            (length,) = struct.unpack_from("<I", buf, 4)
            if length > self._max_length or length < HEADER_SIZE:
                self._skip_garbage(buf.find(TCP_MAGIC, 1))
                continue
            end = TCP_ENVELOPE_SIZE + length
            if len(buf) < end:
                return packets
            packets.append(bytes(buf[TCP_ENVELOPE_SIZE:end]))
            del buf[:end]

    def _skip_garbage(self, next_magic: int) -> None:
        if next_magic < 0:
            # Keep up to 3 trailing bytes: they may be the start of the next magic.
            keep = 0
            for size in (3, 2, 1):
                if len(self._buffer) >= size and TCP_MAGIC.startswith(bytes(self._buffer[-size:])):
                    keep = size
                    break
            cut = len(self._buffer) - keep
        else:
            cut = next_magic
        junk = bytes(self._buffer[:cut])
        del self._buffer[:cut]
        if junk and self._on_garbage is not None:
            self._on_garbage(junk)
