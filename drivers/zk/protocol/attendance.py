"""Stored attendance records: the four layouts terminals use, one record or a whole set.

Record sizes are 8 bytes (two field orders: pyzk's and the ZEM500's), 16 bytes (numeric
user ids), and 40 or 49 bytes (ASCII user ids). A bulk read returns a data set whose
record size follows from its byte count and the record count GET_FREE_SIZES gave.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Final, Literal

from punchgate.drivers.zk.protocol.errors import ZkFrameError
from punchgate.drivers.zk.protocol.fields import data_set_body, padded_text, text_field
from punchgate.drivers.zk.protocol.time_codec import decode_time_or_none

EightByteVariant = Literal["pyzk", "zem500"]
ATTENDANCE_RECORD_SIZES: Final = (8, 16, 40, 49)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttendanceRecord:
    """One attendance record. `timestamp` is None when the packed time is not a real date
    (the raw value stays in `time_raw`, so nothing is lost)."""

    uid: int  # the terminal's internal user number (0 when the layout has none)
    user_id: str  # the enrolment number people know
    time_raw: int
    timestamp: dt.datetime | None
    verify: int  # 0 password, 1 fingerprint, 2 card, 15 face, ...
    state: int  # 0 in, 1 out, 2 break-out, 3 break-in, 4 OT-in, 5 OT-out
    work_code: int = 0
    extra: bytes = b""  # trailing bytes the layout does not explain
    raw: bytes = b""


def encode_attendance(
    record: AttendanceRecord, record_size: int, *, eight_byte_variant: EightByteVariant = "pyzk"
) -> bytes:
    """Encode one attendance record in the given layout."""
    if record_size == 8:
        if eight_byte_variant == "zem500":
            if record.verify > 15 or record.state > 15:
                raise ValueError("zem500 8-byte records hold verify and state in 4 bits each")
            packed = (record.state << 4) | record.verify
            return struct.pack("<HBBI", record.uid, packed, record.work_code & 0xFF, record.time_raw)
        return struct.pack("<HBIB", record.uid, record.verify, record.time_raw, record.state)
    if record_size == 16:
        if not record.user_id.isdigit():
            raise ValueError(f"16-byte records hold numeric user ids only, not {record.user_id!r}")
        return struct.pack(
            "<IIBB2sI",
            int(record.user_id),
            record.time_raw,
            record.verify,
            record.state,
            b"\0\0",
            record.work_code,
        )
    if record_size in (40, 49):
        tail_size = record_size - 32
        tail = record.extra.ljust(tail_size, b"\x00")[:tail_size]
        return (
            struct.pack(
                "<H24sBIB",
                record.uid,
                padded_text(record.user_id, 24, "user id"),
                record.verify,
                record.time_raw,
                record.state,
            )
            + tail
        )
    raise ValueError(f"unknown attendance record size {record_size}")


def decode_attendance(
    raw: bytes, record_size: int, *, eight_byte_variant: EightByteVariant = "pyzk"
) -> AttendanceRecord:
    """Decode one attendance record of `record_size` bytes."""
    if len(raw) != record_size:
        raise ZkFrameError(f"attendance record needs {record_size} bytes, got {len(raw)}", raw)
    raw = bytes(raw)
    if record_size == 8:
        if eight_byte_variant == "zem500":
            uid, packed, work, t = struct.unpack("<HBBI", raw)
            return AttendanceRecord(
                uid=uid,
                user_id=str(uid),
                time_raw=t,
                timestamp=decode_time_or_none(t),
                verify=packed & 0x0F,
                state=packed >> 4,
                work_code=work,
                raw=raw,
            )
        uid, verify, t, state = struct.unpack("<HBIB", raw)
        return AttendanceRecord(
            uid=uid,
            user_id=str(uid),
            time_raw=t,
            timestamp=decode_time_or_none(t),
            verify=verify,
            state=state,
            raw=raw,
        )
    if record_size == 16:
        user, t, verify, state, reserved, work = struct.unpack("<IIBB2sI", raw)
        return AttendanceRecord(
            uid=0,
            user_id=str(user),
            time_raw=t,
            timestamp=decode_time_or_none(t),
            verify=verify,
            state=state,
            work_code=work,
            extra=reserved,
            raw=raw,
        )
    if record_size in (40, 49):
        uid, user, verify, t, state = struct.unpack_from("<H24sBIB", raw)
        return AttendanceRecord(
            uid=uid,
            user_id=text_field(user),
            time_raw=t,
            timestamp=decode_time_or_none(t),
            verify=verify,
            state=state,
            extra=raw[32:],
            raw=raw,
        )
    raise ZkFrameError(f"unknown attendance record size {record_size}", raw[:64])


def decode_attendance_set(
    data: bytes, record_count: int, *, eight_byte_variant: EightByteVariant = "pyzk"
) -> list[AttendanceRecord]:
    """Decode a whole attendance data set (u32 byte count + records).

    The record size comes from the byte count and the record count GET_FREE_SIZES gave;
    a byte count that fits no known layout raises ZkFrameError instead of guessing.
    """
    body = data_set_body(data)
    if record_count <= 0:
        if body:
            raise ZkFrameError(
                f"{len(body)} bytes of records but a record count of {record_count}", data[:64]
            )
        return []
    size, remainder = divmod(len(body), record_count)
    if remainder or size not in ATTENDANCE_RECORD_SIZES:
        raise ZkFrameError(
            f"{len(body)} bytes do not split into {record_count} records of a known size", data[:64]
        )
    return [
        decode_attendance(body[i : i + size], size, eight_byte_variant=eight_byte_variant)
        for i in range(0, len(body), size)
    ]
