"""The two ways ZK terminals put a date and time into bytes.

Stored records and GET_TIME/SET_TIME use a packed 4-byte count in which every month has
31 days; live events use six bytes YY MM DD hh mm ss. Both are naive local time.
"""

from __future__ import annotations

import datetime as dt
import struct

from punchgate.drivers.zk.protocol.errors import ZkFrameError


def encode_time(when: dt.datetime) -> int:
    """The packed 4-byte time (every month counts as 31 days), as an int."""
    if not 2000 <= when.year <= 2136:
        raise ValueError(f"{when} cannot be packed (years 2000-2136 only)")
    days = ((when.year - 2000) * 12 + (when.month - 1)) * 31 + (when.day - 1)
    return ((days * 24 + when.hour) * 60 + when.minute) * 60 + when.second


def decode_time(value: int) -> dt.datetime:
    """Unpack a 4-byte time. Raises ZkFrameError for impossible dates (e.g. 31 February)."""
    rest, second = divmod(value, 60)
    rest, minute = divmod(rest, 60)
    rest, hour = divmod(rest, 24)
    rest, day = divmod(rest, 31)
    year, month = divmod(rest, 12)
    try:
        return dt.datetime(year + 2000, month + 1, day + 1, hour, minute, second)
    except ValueError as exc:
        raise ZkFrameError(
            f"packed time {value} is not a valid date: {exc}", struct.pack("<I", value)
        ) from exc


def decode_time_or_none(value: int) -> dt.datetime | None:
    """`decode_time`, but None for an impossible date (records keep the raw value instead)."""
    try:
        return decode_time(value)
    except ZkFrameError:
        return None


def encode_time6(when: dt.datetime) -> bytes:
    """The 6-byte live-event time: YY MM DD hh mm ss."""
    if not 2000 <= when.year <= 2255:
        raise ValueError(f"{when} cannot be encoded in 6-byte time")
    return bytes((when.year - 2000, when.month, when.day, when.hour, when.minute, when.second))


def decode_time6(raw: bytes) -> dt.datetime:
    """Decode a 6-byte live-event time."""
    if len(raw) != 6:
        raise ZkFrameError(f"6-byte time needs 6 bytes, got {len(raw)}", raw)
    y, mo, d, h, mi, s = raw
    try:
        return dt.datetime(2000 + y, mo, d, h, mi, s)
    except ValueError as exc:
        raise ZkFrameError(f"6-byte time is not a valid date: {exc}", raw) from exc
