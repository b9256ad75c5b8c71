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

from dataclasses import dataclass

STX = 0xA5
BROADCAST_ID = 0  # every device on the line answers; only safe point-to-point
MAX_DEVICE_ID = 0xFFFFFFFF


class CodecError(ValueError):
    """A frame or payload that does not follow the protocol."""


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/MCRF4XX: reflected poly 0x1021 (0x8408), init 0xFFFF, no final xor."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


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
