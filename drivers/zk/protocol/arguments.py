"""The small payloads of individual commands: buffered reads, bulk transfers, options.

PREPARE_BUFFER / READ_BUFFER stage and fetch a table, PREPARE_DATA announces a bulk
transfer, OPTIONS_RRQ asks for one `key=value` setting. Each codec is a few bytes; what
they share is that both ends of the protocol need both directions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from punchgate.drivers.zk.protocol.errors import ZkFrameError


@dataclass(frozen=True, slots=True)
class BufferRequest:
    """The 11-byte PREPARE_BUFFER argument: which table to stage for a buffered read."""

    command: int  # CMD_ATTLOG_RRQ, CMD_USERTEMP_RRQ, CMD_DB_RRQ
    fct: int
    ext: int = 0


def encode_buffer_request(request: BufferRequest) -> bytes:
    return struct.pack("<BHII", 1, request.command, request.fct, request.ext)


def decode_buffer_request(data: bytes) -> BufferRequest:
    if len(data) != 11 or data[0] != 1:
        raise ZkFrameError("PREPARE_BUFFER argument must be 11 bytes starting with 01", data)
    _, command, fct, ext = struct.unpack("<BHII", data)
    return BufferRequest(command, fct, ext)


def encode_buffer_ready(size: int, check: int = 0) -> bytes:
    """ACK_OK data announcing a staged buffer: 00, size, size again, a 4-byte value whose
    meaning is unknown in the captures (clients ignore it)."""
    return struct.pack("<BIII", 0, size, size, check)


def decode_buffer_ready(data: bytes) -> int:
    """The staged buffer size from a PREPARE_BUFFER ACK_OK."""
    if len(data) < 5:
        raise ZkFrameError("buffer-ready reply shorter than 5 bytes", data)
    (size,) = struct.unpack_from("<I", data, 1)
    return int(size)


def encode_read_buffer(start: int, size: int) -> bytes:
    return struct.pack("<II", start, size)


def decode_read_buffer(data: bytes) -> tuple[int, int]:
    if len(data) != 8:
        raise ZkFrameError("READ_BUFFER argument must be 8 bytes (start, size)", data)
    start, size = struct.unpack("<II", data)
    return int(start), int(size)


def encode_prepare_data(total: int, chunk: int) -> bytes:
    return struct.pack("<II", total, chunk)


def decode_prepare_data(data: bytes) -> tuple[int, int]:
    """(total bytes, bytes per CMD_DATA chunk) from a PREPARE_DATA packet; chunk 0 if absent."""
    if len(data) < 4:
        raise ZkFrameError("PREPARE_DATA shorter than 4 bytes", data)
    (total,) = struct.unpack_from("<I", data)
    chunk = struct.unpack_from("<I", data, 4)[0] if len(data) >= 8 else 0
    return int(total), int(chunk)


def encode_option_request(key: str) -> bytes:
    return key.encode("ascii") + b"\x00"


def decode_option_request(data: bytes) -> str:
    return bytes(data).split(b"\x00", 1)[0].decode("ascii", errors="replace")


def encode_option_reply(key: str, value: str) -> bytes:
    return f"{key}={value}".encode() + b"\x00"


def decode_option_reply(data: bytes) -> tuple[str, str]:
    """(key, value) from an OPTIONS_RRQ reply like `~Platform=ZEM760_TFT\\0`."""
    text = bytes(data).split(b"\x00", 1)[0].decode("utf-8", errors="replace")
    key, sep, value = text.partition("=")
    if not sep:
        raise ZkFrameError("option reply has no '='", data)
    return key, value
