"""The payload of a live EF_ATTLOG event, pushed by the terminal when someone punches.

Seven sizes are known (10, 12, 14, 32, 36, 37, 52 bytes): a u16 uid, a u32 user number or
an ASCII user id, then verify, state and the 6-byte time, padded to the firmware's size.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from typing import Final

from punchgate.drivers.zk.protocol.errors import ZkFrameError
from punchgate.drivers.zk.protocol.fields import padded_text, text_field
from punchgate.drivers.zk.protocol.time_codec import decode_time6, encode_time6

LIVE_EVENT_SIZES: Final = (10, 12, 14, 32, 36, 37, 52)


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveAttendance:
    """The payload of one EF_ATTLOG real-time event."""

    user_id: str  # for the 10/14-byte forms this is the internal uid, as text
    verify: int
    state: int
    timestamp: dt.datetime
    extra: bytes = b""
    raw: bytes = b""


def encode_live_attendance(event: LiveAttendance, size: int) -> bytes:
    """Encode an EF_ATTLOG payload: 10/14 (u16 uid), 12 (u32 user), 32/36/37/52 (ASCII id)."""
    when = encode_time6(event.timestamp)
    if size in (10, 14):
        body = struct.pack("<HBB", int(event.user_id), event.verify, event.state) + when
    elif size == 12:
        body = struct.pack("<IBB", int(event.user_id), event.verify, event.state) + when
    elif size in (32, 36, 37, 52):
        body = padded_text(event.user_id, 24, "user id") + bytes((event.verify, event.state)) + when
    else:
        raise ValueError(f"unknown live event size {size}")
    return body + event.extra.ljust(size - len(body), b"\x00")[: size - len(body)]


def decode_live_attendance(raw: bytes) -> LiveAttendance:
    """Decode one EF_ATTLOG payload of any known size (10, 12, 14, 32, 36, 37 or >= 52)."""
    raw = bytes(raw)
    size = len(raw)
    if size in (10, 14):
        uid, verify, state = struct.unpack_from("<HBB", raw)
        return LiveAttendance(
            user_id=str(uid),
            verify=verify,
            state=state,
            timestamp=decode_time6(raw[4:10]),
            extra=raw[10:],
            raw=raw,
        )
    if size == 12:
        user, verify, state = struct.unpack_from("<IBB", raw)
        return LiveAttendance(
            user_id=str(user), verify=verify, state=state, timestamp=decode_time6(raw[6:12]), raw=raw
        )
    if size in (32, 36, 37) or size >= 52:
        return LiveAttendance(
            user_id=text_field(raw[:24]),
            verify=raw[24],
            state=raw[25],
            timestamp=decode_time6(raw[26:32]),
            extra=raw[32:],
            raw=raw,
        )
    raise ZkFrameError(f"EF_ATTLOG payload of {size} bytes fits no known layout", raw)
