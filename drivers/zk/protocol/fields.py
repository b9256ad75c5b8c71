"""Byte-layout helpers the record codecs share: fixed-width text fields and data sets.

Text fields are NUL-padded to a fixed width. A data set (what a bulk read returns) is the
concatenated records behind a u32 LE byte count. Attendance, user and live-event codecs
all use these, so they live in one place rather than in any one of them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from punchgate.drivers.zk.protocol.errors import ZkFrameError


def text_field(raw: bytes) -> str:
    """The text of a NUL-padded field (undecodable bytes replaced, never an error)."""
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


def padded_text(text: str, size: int, what: str, encoding: str = "utf-8") -> bytes:
    """`text` encoded and NUL-padded to `size` bytes; ValueError naming `what` if too long."""
    encoded = text.encode(encoding)
    if len(encoded) > size:
        raise ValueError(f"{what} {text!r} longer than {size} bytes")
    return encoded.ljust(size, b"\x00")


def data_set_body(data: bytes) -> bytes:
    """The records of a data set, after checking its byte count."""
    if len(data) < 4:
        raise ZkFrameError("data set shorter than its 4-byte byte count", data)
    (count,) = struct.unpack_from("<I", data)
    if count != len(data) - 4:
        raise ZkFrameError(f"data set says {count} bytes but carries {len(data) - 4}", data[:64])
    return bytes(data[4:])


def encode_data_set(records: Iterable[bytes]) -> bytes:
    """Prefix concatenated records with their u32 LE byte count, as every data set is."""
    body = b"".join(records)
    return struct.pack("<I", len(body)) + body
