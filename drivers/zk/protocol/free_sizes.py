"""The GET_FREE_SIZES reply: a terminal's record, user and template counts and capacities.

An int32 LE array of 80 bytes, or 92/112 bytes on firmware that also counts faces. Only
the slots below have a known meaning (see zk.md); the others are written as zero.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from punchgate.drivers.zk.protocol.errors import ZkFrameError

FREE_SIZES_LENGTHS: Final = (80, 92, 112)


@dataclass(frozen=True, slots=True, kw_only=True)
class FreeSizes:
    """The counts and capacities a terminal reports (int32 LE array, see zk.md)."""

    users: int = 0
    fingers: int = 0
    records: int = 0
    oplog: int = 0
    admins: int = 0
    passwords: int = 0
    finger_capacity: int = 0
    user_capacity: int = 0
    record_capacity: int = 0
    fingers_free: int = 0
    users_free: int = 0
    records_free: int = 0
    faces: int | None = None  # present only in replies of 92 bytes or more
    face_capacity: int | None = None


_FREE_SIZES_SLOTS: Final = {
    "users": 4,
    "fingers": 6,
    "records": 8,
    "oplog": 10,
    "admins": 12,
    "passwords": 13,
    "finger_capacity": 14,
    "user_capacity": 15,
    "record_capacity": 16,
    "fingers_free": 17,
    "users_free": 18,
    "records_free": 19,
}


def encode_free_sizes(sizes: FreeSizes, length: int = 92) -> bytes:
    """Encode the reply data in one of the known lengths (80 without faces, 92 or 112 with)."""
    if length not in FREE_SIZES_LENGTHS:
        raise ValueError(f"free-sizes length must be one of {FREE_SIZES_LENGTHS}")
    fields = [0] * (length // 4)
    for name, index in _FREE_SIZES_SLOTS.items():
        fields[index] = getattr(sizes, name)
    if length >= 92:
        fields[20] = sizes.faces or 0
        fields[22] = sizes.face_capacity or 0
    return struct.pack(f"<{len(fields)}i", *fields)


def decode_free_sizes(data: bytes) -> FreeSizes:
    """Decode a GET_FREE_SIZES reply (80 bytes or more; a face section when >= 92)."""
    if len(data) < 80:
        raise ZkFrameError(f"free-sizes reply of {len(data)} bytes is shorter than 80", data)
    fields = struct.unpack_from("<20i", data)
    values = {name: fields[index] for name, index in _FREE_SIZES_SLOTS.items()}
    faces = face_capacity = None
    if len(data) >= 92:
        faces, _, face_capacity = struct.unpack_from("<3i", data, 80)
    return FreeSizes(**values, faces=faces, face_capacity=face_capacity)
