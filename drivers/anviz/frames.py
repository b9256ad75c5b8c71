"""Anviz TC_B frames as values: the CRC-16, requests, replies, and bytes that were no frame.

Encoding lives here; turning a byte stream back into frames is frame_decoder.py's job. Pure
values, no I/O, shared by the host side and the emulated device side.
Facts and errata are in docs/protocols/anviz.md; the byte offsets below follow it.

Frame layout (all integers big-endian except the CRC, which goes low byte first):
  request  A5 | CH(4) | CMD | LEN(2) | DATA | CRC(2)         -> 10 + LEN bytes
  response A5 | CH(4) | ACK | RET | LEN(2) | DATA | CRC(2)   -> 11 + LEN bytes
A byte 5 below 0x80 means a request (or the device's 0x7F heartbeat); at or above it, a reply.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

STX = 0xA5
BROADCAST_ID = 0  # every device on the line answers; only safe point-to-point
MAX_DEVICE_ID = 0xFFFFFFFF


class CodecError(ValueError):
    """A frame or payload that does not follow the protocol."""


# Bit i of a byte moved to bit 7 - i, for every byte value.
_REFLECT = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/MCRF4XX: reflected poly 0x1021 (0x8408), init 0xFFFF, no final xor.

    Computed by the standard library's C, table-driven CRC-16/XMODEM (`binascii.crc_hqx`, the
    same polynomial unreflected): reflecting every input byte and then the 16-bit result turns
    one into the other exactly (the init 0xFFFF is its own reflection). Over a 362-byte frame it
    is ~20x faster than a 256-entry table in Python (bench/bench_anviz_decoder.py) and ~200x
    faster than the bitwise loop it replaced; tests check it against that bitwise definition.
    """
    crc = binascii.crc_hqx(data.translate(_REFLECT), 0xFFFF)
    return _REFLECT[crc & 0xFF] << 8 | _REFLECT[crc >> 8]


def _with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def _check_device_id(device_id: int) -> None:
    if not 0 <= device_id <= MAX_DEVICE_ID:
        raise CodecError(f"device id {device_id} is outside 0..{MAX_DEVICE_ID}")


@dataclass(frozen=True, slots=True)
class Request:
    """A host-to-device command (also the form of the device's heartbeat)."""

    device_id: int
    command: int
    data: bytes = b""

    def encode(self) -> bytes:
        _check_device_id(self.device_id)
        head = bytes([STX]) + self.device_id.to_bytes(4, "big") + bytes([self.command])
        return _with_crc(head + len(self.data).to_bytes(2, "big") + self.data)


@dataclass(frozen=True, slots=True)
class Response:
    """A device-to-host reply (or an unrequested real-time record push)."""

    device_id: int
    ack: int
    ret: int
    data: bytes = b""
    raw: bytes = b""  # the frame's bytes as received, for logs

    def encode(self) -> bytes:
        _check_device_id(self.device_id)
        head = bytes([STX]) + self.device_id.to_bytes(4, "big") + bytes([self.ack, self.ret])
        return _with_crc(head + len(self.data).to_bytes(2, "big") + self.data)


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that were not a valid frame: noise, a CRC mismatch, or a frame cut short."""

    raw: bytes
    reason: str


Frame = Request | Response

LOG_PREVIEW_BYTES = 64  # how much of a bad frame or noise a log line shows


def hex_preview(raw: bytes, limit: int = LOG_PREVIEW_BYTES) -> str:
    """`raw` in hex for a log line, cut after `limit` bytes and saying how many were left out."""
    if len(raw) <= limit:
        return raw.hex()
    return f"{raw[:limit].hex()}...(+{len(raw) - limit} bytes)"
