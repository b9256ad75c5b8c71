"""The ZK standalone protocol as pure functions and values: no sockets, no clocks.

Shared by the emulator (terminal side) and the gateway's ZK driver (client side). Everything
here follows /work/shared/protocols/zk.md; the vectors in zk_vectors.json pin it down.

A ZK packet is an 8-byte little-endian header (command, checksum, session, reply number)
followed by data. Over UDP it travels bare; over TCP it is wrapped in an envelope
`50 50 82 7D` + u32 LE length. Malformed input raises `ZkFrameError` (a ValueError) with
the offending bytes in hex, so callers can log it and carry on.
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal

# ---------------------------------------------------------------------------------------
# Command and reply codes
# ---------------------------------------------------------------------------------------

CMD_DB_RRQ: Final = 7
CMD_USER_WRQ: Final = 8
CMD_USERTEMP_RRQ: Final = 9
CMD_OPTIONS_RRQ: Final = 11
CMD_OPTIONS_WRQ: Final = 12
CMD_ATTLOG_RRQ: Final = 13
CMD_CLEAR_DATA: Final = 14
CMD_CLEAR_ATTLOG: Final = 15
CMD_DELETE_USER: Final = 18
CMD_UNLOCK: Final = 31
CMD_GET_FREE_SIZES: Final = 50
CMD_STARTVERIFY: Final = 60
CMD_CANCELCAPTURE: Final = 62
CMD_STATE_RRQ: Final = 64
CMD_GET_PINWIDTH: Final = 69
CMD_GET_TIME: Final = 201
CMD_SET_TIME: Final = 202
CMD_REG_EVENT: Final = 500
CMD_CONNECT: Final = 1000
CMD_EXIT: Final = 1001
CMD_ENABLEDEVICE: Final = 1002
CMD_DISABLEDEVICE: Final = 1003
CMD_RESTART: Final = 1004
CMD_POWEROFF: Final = 1005
CMD_REFRESHDATA: Final = 1013
CMD_GET_VERSION: Final = 1100
CMD_AUTH: Final = 1102
CMD_PREPARE_DATA: Final = 1500
CMD_DATA: Final = 1501
CMD_FREE_DATA: Final = 1502
CMD_PREPARE_BUFFER: Final = 1503  # a.k.a. CMD_DATA_WRRQ
CMD_READ_BUFFER: Final = 1504  # a.k.a. CMD_DATA_RDY

CMD_ACK_OK: Final = 2000
CMD_ACK_ERROR: Final = 2001
CMD_ACK_DATA: Final = 2002
CMD_ACK_UNAUTH: Final = 2005
CMD_ACK_UNKNOWN: Final = 0xFFFF

REPLY_CODES: Final = frozenset({CMD_ACK_OK, CMD_ACK_ERROR, CMD_ACK_DATA, CMD_ACK_UNAUTH, CMD_ACK_UNKNOWN})

# Real-time event codes (carried in the session field of a CMD_REG_EVENT packet).
EF_ATTLOG: Final = 1
EF_FINGER: Final = 2
EF_ENROLLUSER: Final = 4
EF_ENROLLFINGER: Final = 8
EF_BUTTON: Final = 16
EF_UNLOCK: Final = 32
EF_VERIFY: Final = 128
EF_FPFTR: Final = 256
EF_ALARM: Final = 512

# Table selectors used in the PREPARE_BUFFER argument.
FCT_ATTLOG: Final = 1
FCT_FINGERTMP: Final = 2
FCT_OPLOG: Final = 4
FCT_USER: Final = 5

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


class ZkFrameError(ValueError):
    """A frame, record or payload that does not follow the protocol."""

    def __init__(self, message: str, raw: bytes = b"") -> None:
        self.raw = bytes(raw)
        suffix = f" (raw={self.raw.hex()})" if raw else ""
        super().__init__(message + suffix)


class ZkChecksumError(ZkFrameError):
    """A packet whose checksum field does not match its bytes."""


# ---------------------------------------------------------------------------------------
# Checksum and packets
# ---------------------------------------------------------------------------------------


def checksum(packet: bytes) -> int:
    """The ZK checksum of a whole packet (header + data); the checksum field counts as 0.

    Sum LE 16-bit words (an odd last byte is a low byte), fold carries back in, invert.
    """
    if len(packet) < HEADER_SIZE:
        raise ZkFrameError(f"packet shorter than the {HEADER_SIZE}-byte header", packet)
    body = packet[:2] + b"\x00\x00" + packet[4:]
    if len(body) % 2:
        body += b"\x00"
    total: int = sum(struct.unpack(f"<{len(body) // 2}H", body))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


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


# ---------------------------------------------------------------------------------------
# Comm key
# ---------------------------------------------------------------------------------------


def comm_key_hash(key: int, session_id: int, ticks: int = 50) -> bytes:
    """The 4 CMD_AUTH data bytes for numeric comm key `key` on session `session_id`."""
    reversed_key = int(f"{key & 0xFFFFFFFF:032b}"[::-1], 2)
    mixed = bytearray(struct.pack("<I", (reversed_key + session_id) & 0xFFFFFFFF))
    for i, letter in enumerate(b"ZKSO"):
        mixed[i] ^= letter
    swapped = mixed[2:4] + mixed[0:2]
    t = ticks & 0xFF
    return bytes((swapped[0] ^ t, swapped[1] ^ t, t, swapped[3] ^ t))


def comm_key_matches(data: bytes, key: int, session_id: int) -> bool:
    """True when CMD_AUTH data proves `key`; the ticks byte is read from the packet itself."""
    if len(data) < 4:
        return False
    return bytes(data[:4]) == comm_key_hash(key, session_id, data[2])


# ---------------------------------------------------------------------------------------
# Time encodings
# ---------------------------------------------------------------------------------------


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


def _try_decode_time(value: int) -> dt.datetime | None:
    try:
        return decode_time(value)
    except ZkFrameError:
        return None


# ---------------------------------------------------------------------------------------
# Attendance records
# ---------------------------------------------------------------------------------------

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


def _ascii_field(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


def _ascii_pad(text: str, size: int, what: str, encoding: str = "utf-8") -> bytes:
    encoded = text.encode(encoding)
    if len(encoded) > size:
        raise ValueError(f"{what} {text!r} longer than {size} bytes")
    return encoded.ljust(size, b"\x00")


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
                _ascii_pad(record.user_id, 24, "user id"),
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
                timestamp=_try_decode_time(t),
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
            timestamp=_try_decode_time(t),
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
            timestamp=_try_decode_time(t),
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
            user_id=_ascii_field(user),
            time_raw=t,
            timestamp=_try_decode_time(t),
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
    body = _data_set_body(data)
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


def _data_set_body(data: bytes) -> bytes:
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


# ---------------------------------------------------------------------------------------
# User records
# ---------------------------------------------------------------------------------------

USER_RECORD_SIZES: Final = (28, 72)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    """One enrolled user."""

    uid: int
    user_id: str
    name: str = ""
    privilege: int = 0  # bit0 disabled; bits 3-1 level (pyzk: 0 user, 14 admin)
    password: str = ""
    card: int = 0
    group: int = 1
    timezone_flag: int = 0  # 72-byte: 0 = use the group's time zones; 28-byte: the timezone i16
    timezones: tuple[int, int, int] = (0, 0, 0)


def encode_user(user: UserRecord, record_size: int, *, encoding: str = "utf-8") -> bytes:
    """Encode a user in the 28-byte (BW) or 72-byte (TFT) layout; the name in `encoding`
    (terminals sold in China store GBK, others a legacy code page)."""
    if record_size == 72:
        return struct.pack(
            "<HB8s24sIBH3H24s",
            user.uid,
            user.privilege,
            _ascii_pad(user.password, 8, "password"),
            _ascii_pad(user.name, 24, "name", encoding),
            user.card,
            user.group,
            user.timezone_flag,
            *user.timezones,
            _ascii_pad(user.user_id, 24, "user id"),
        )
    if record_size == 28:
        if not user.user_id.isdigit():
            raise ValueError(f"28-byte users hold numeric user ids only, not {user.user_id!r}")
        return struct.pack(
            "<HB5s8sIxBhI",
            user.uid,
            user.privilege,
            _ascii_pad(user.password, 5, "password"),
            _ascii_pad(user.name, 8, "name", encoding),
            user.card,
            user.group,
            user.timezone_flag,
            int(user.user_id),
        )
    raise ValueError(f"unknown user record size {record_size}")


def decode_user(raw: bytes, record_size: int) -> UserRecord:
    """Decode one user record of 28 or 72 bytes."""
    if len(raw) != record_size:
        raise ZkFrameError(f"user record needs {record_size} bytes, got {len(raw)}", raw)
    if record_size == 72:
        uid, priv, pw, name, card, group, tz_flag, tz1, tz2, tz3, user_id = struct.unpack(
            "<HB8s24sIBH3H24s", raw
        )
        return UserRecord(
            uid=uid,
            user_id=_ascii_field(user_id),
            name=_ascii_field(name),
            privilege=priv,
            password=_ascii_field(pw),
            card=card,
            group=group,
            timezone_flag=tz_flag,
            timezones=(tz1, tz2, tz3),
        )
    if record_size == 28:
        uid, priv, pw, name, card, group, tz, user_num = struct.unpack("<HB5s8sIxBhI", raw)
        return UserRecord(
            uid=uid,
            user_id=str(user_num),
            name=_ascii_field(name),
            privilege=priv,
            password=_ascii_field(pw),
            card=card,
            group=group,
            timezone_flag=tz,
        )
    raise ZkFrameError(f"unknown user record size {record_size}", raw[:64])


def decode_user_set(data: bytes, user_count: int) -> list[UserRecord]:
    """Decode a whole user data set (u32 byte count + records)."""
    body = _data_set_body(data)
    if user_count <= 0:
        if body:
            raise ZkFrameError(f"{len(body)} bytes of users but a user count of {user_count}", data[:64])
        return []
    size, remainder = divmod(len(body), user_count)
    if remainder or size not in USER_RECORD_SIZES:
        raise ZkFrameError(
            f"{len(body)} bytes do not split into {user_count} users of a known size", data[:64]
        )
    return [decode_user(body[i : i + size], size) for i in range(0, len(body), size)]


# ---------------------------------------------------------------------------------------
# Live ATTLOG events
# ---------------------------------------------------------------------------------------

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
        body = _ascii_pad(event.user_id, 24, "user id") + bytes((event.verify, event.state)) + when
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
            user_id=_ascii_field(raw[:24]),
            verify=raw[24],
            state=raw[25],
            timestamp=decode_time6(raw[26:32]),
            extra=raw[32:],
            raw=raw,
        )
    raise ZkFrameError(f"EF_ATTLOG payload of {size} bytes fits no known layout", raw)


# ---------------------------------------------------------------------------------------
# GET_FREE_SIZES
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Small argument codecs
# ---------------------------------------------------------------------------------------


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
