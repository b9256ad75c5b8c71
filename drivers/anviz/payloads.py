"""The DATA part of the Anviz commands a gateway uses: records, counts, clock, text, settings.

Each layout is a frozen value with `encode`/`decode`, or a pair of functions, so that the
driver and the emulator read and write the same bytes. Frames around these payloads are in
frames.py; the byte offsets follow docs/protocols/anviz.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from punchgate.drivers.anviz.commands import (
    ACK_PONG,
    ACK_REALTIME_RECORD,
    CMD_CLEAR_RECORDS,
    CMD_DELETE_USER,
    CMD_DOWNLOAD_RECORDS,
    CMD_GET_CAPACITY,
    CMD_GET_CONFIG1,
    CMD_GET_CONFIG2,
    CMD_GET_DEVICE_ID,
    CMD_GET_MODEL,
    CMD_GET_RECORD_INFO,
    CMD_GET_SERIAL,
    CMD_GET_TIME,
    CMD_GET_USERS,
    CMD_HEARTBEAT,
    CMD_REBOOT,
    CMD_SET_CONFIG2,
    CMD_SET_TIME,
    CMD_SET_USERS,
    MAX_RECORDS_PER_PACKET,
    USERS_PER_PACKET,
)
from punchgate.drivers.anviz.frames import CodecError, Request

# DATA sizes of the layouts below (anviz.md §5).
RECORD_SIZE = 14
BATCH_MAX_SIZE = 1 + MAX_RECORDS_PER_PACKET * RECORD_SIZE  # 0xC0: N, then up to 25 records
CONFIG1_SIZE = 18
CONFIG2_SIZE = 15
CONFIG2_REALTIME_INDEX = 4
RECORD_INFO_SIZE = 18
CAPACITY_SIZE = 9
CLOCK_SIZE = 6
SERIAL_SIZE = 16
MODEL_SIZE = 8
DEVICE_ID_SIZE = 4
DOWNLOAD_REQUEST_SIZE = 2
CLEAR_REQUEST_SIZE = 4
CLEAR_REPLY_SIZE = 3
STAFF_RECORD_SIZE = 40  # the 0x72/0x73 staff record (staff.py)
STAFF_BATCH_MAX_SIZE = 1 + USERS_PER_PACKET * STAFF_RECORD_SIZE

# The longest DATA a frame can carry, by its byte 5 (a command, or a reply's ACK = command |
# 0x80), for every frame punchgate sends, answers or expects. The frame decoder refuses a LEN
# above it before waiting for the bytes or computing a CRC, so a false start byte in noise can
# never make it hold or checksum more than a few hundred bytes (anviz.md §2.4).
_REPLY = 0x80
MAX_DATA: dict[int, int] = {
    CMD_GET_SERIAL: 0,
    CMD_GET_SERIAL | _REPLY: SERIAL_SIZE,
    CMD_GET_CONFIG1: 0,
    CMD_GET_CONFIG1 | _REPLY: CONFIG1_SIZE,
    CMD_GET_CONFIG2: 0,
    CMD_GET_CONFIG2 | _REPLY: CONFIG2_SIZE,
    CMD_SET_CONFIG2: CONFIG2_SIZE,
    CMD_SET_CONFIG2 | _REPLY: 0,
    CMD_GET_TIME: 0,
    CMD_GET_TIME | _REPLY: CLOCK_SIZE,
    CMD_SET_TIME: CLOCK_SIZE,
    CMD_SET_TIME | _REPLY: 0,
    CMD_GET_RECORD_INFO: 0,
    CMD_GET_RECORD_INFO | _REPLY: RECORD_INFO_SIZE,
    CMD_DOWNLOAD_RECORDS: DOWNLOAD_REQUEST_SIZE,
    CMD_DOWNLOAD_RECORDS | _REPLY: BATCH_MAX_SIZE,
    CMD_GET_DEVICE_ID: 0,
    CMD_GET_DEVICE_ID | _REPLY: DEVICE_ID_SIZE,
    CMD_GET_MODEL: 0,
    CMD_GET_MODEL | _REPLY: MODEL_SIZE,
    CMD_CLEAR_RECORDS: CLEAR_REQUEST_SIZE,
    CMD_CLEAR_RECORDS | _REPLY: CLEAR_REPLY_SIZE,
    CMD_GET_CAPACITY: 0,
    CMD_GET_CAPACITY | _REPLY: CAPACITY_SIZE,
    CMD_REBOOT: 1,
    CMD_REBOOT | _REPLY: 0,
    CMD_DELETE_USER: 6,
    CMD_DELETE_USER | _REPLY: 0,
    CMD_GET_USERS: 2,
    CMD_GET_USERS | _REPLY: STAFF_BATCH_MAX_SIZE,
    CMD_SET_USERS: STAFF_BATCH_MAX_SIZE,
    CMD_SET_USERS | _REPLY: 0,
    CMD_HEARTBEAT: 0,
    ACK_REALTIME_RECORD: RECORD_SIZE,
    ACK_PONG: 0,
}
# Any other command or reply (another host's traffic on a shared bus, say): the DATA limit of
# protocol V2.15. Templates of face terminals exceed it, but punchgate never asks for those.
OTHER_MAX_DATA = 600


def max_data_length(code: int) -> int:
    """The longest DATA a frame with this command or ACK code (its byte 5) may carry."""
    return MAX_DATA.get(code, OTHER_MAX_DATA)


# Most clients and a captured CrossChex log agree the record clock counts from 2000-01-02
# (the PDFs say 2000-01-01); see anviz.md §5.3. Configurable per terminal.
DEFAULT_EPOCH = dt.datetime(2000, 1, 2)


def _u24(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 3], "big")


def _need(data: bytes, size: int, what: str, *, exact: bool = True) -> None:
    if len(data) < size or (exact and len(data) != size):
        raise CodecError(f"{what}: expected {size} data bytes, got {len(data)} ({data.hex()})")


@dataclass(frozen=True, slots=True)
class Record:
    """One 14-byte attendance record, as stored by the terminal."""

    user_code: int  # 40-bit employee id
    seconds: int  # since the epoch, device-local wall time
    backup_code: int  # how the user verified: bit0 FP1, bit1 FP2, bit2 password, bit3 card
    record_type: int  # bit7 door opened, low nibble attendance state
    work_code: int = 0

    def encode(self) -> bytes:
        return (
            self.user_code.to_bytes(5, "big")
            + self.seconds.to_bytes(4, "big")
            + bytes([self.backup_code, self.record_type])
            + self.work_code.to_bytes(3, "big")
        )

    @classmethod
    def decode(cls, data: bytes) -> Record:
        _need(data, RECORD_SIZE, "record")
        return cls(
            user_code=int.from_bytes(data[0:5], "big"),
            seconds=int.from_bytes(data[5:9], "big"),
            backup_code=data[9],
            record_type=data[10],
            work_code=_u24(data, 11),
        )

    @property
    def state(self) -> int:
        return self.record_type & 0x0F

    @property
    def door_opened(self) -> bool:
        return bool(self.record_type & 0x80)

    def local_time(self, epoch: dt.datetime = DEFAULT_EPOCH) -> dt.datetime:
        return epoch + dt.timedelta(seconds=self.seconds)


def seconds_since_epoch(when: dt.datetime, epoch: dt.datetime = DEFAULT_EPOCH) -> int:
    """Device-local naive time to the record's 32-bit seconds field."""
    seconds = int((when.replace(microsecond=0, tzinfo=None) - epoch).total_seconds())
    if not 0 <= seconds <= 0xFFFFFFFF:
        raise CodecError(f"time {when} is outside the record clock range")
    return seconds


def download_request(device_id: int, mode: int, count: int) -> Request:
    if not 1 <= count <= MAX_RECORDS_PER_PACKET:
        raise CodecError(f"records per packet must be 1..{MAX_RECORDS_PER_PACKET}, not {count}")
    return Request(device_id, CMD_DOWNLOAD_RECORDS, bytes([mode, count]))


def encode_records(records: list[Record]) -> bytes:
    return bytes([len(records)]) + b"".join(r.encode() for r in records)


def decode_records(data: bytes) -> list[Record]:
    """The 0xC0 reply: D[0] = N, then N records of 14 bytes."""
    _need(data, 1, "record batch", exact=False)
    count = data[0]
    _need(data, 1 + count * RECORD_SIZE, f"record batch of {count}")
    return [Record.decode(data[1 + i * RECORD_SIZE : 1 + (i + 1) * RECORD_SIZE]) for i in range(count)]


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """The 0xBC reply: what the terminal holds, each a 3-byte count."""

    users: int
    fingerprints: int
    passwords: int
    cards: int
    all_records: int
    new_records: int

    def encode(self) -> bytes:
        fields = (self.users, self.fingerprints, self.passwords, self.cards)
        return b"".join(v.to_bytes(3, "big") for v in (*fields, self.all_records, self.new_records))

    @classmethod
    def decode(cls, data: bytes) -> RecordInfo:
        _need(data, RECORD_INFO_SIZE, "record information")
        return cls(*(_u24(data, i) for i in range(0, RECORD_INFO_SIZE, 3)))


@dataclass(frozen=True, slots=True)
class Capacity:
    """The 0xDD reply: the terminal's limits."""

    users: int
    fingerprints: int
    records: int

    def encode(self) -> bytes:
        return b"".join(v.to_bytes(3, "big") for v in (self.users, self.fingerprints, self.records))

    @classmethod
    def decode(cls, data: bytes) -> Capacity:
        _need(data, CAPACITY_SIZE, "capacity")
        return cls(_u24(data, 0), _u24(data, 3), _u24(data, 6))


def encode_clock(when: dt.datetime) -> bytes:
    """0x38 reply / 0x39 request: YY MM DD hh mm ss in plain binary, year 2000 + YY."""
    if not 2000 <= when.year <= 2255:
        raise CodecError(f"year {when.year} cannot be set on the terminal (2000..2255)")
    return bytes([when.year - 2000, when.month, when.day, when.hour, when.minute, when.second])


def decode_clock(data: bytes) -> dt.datetime:
    _need(data, CLOCK_SIZE, "clock")
    try:
        return dt.datetime(2000 + data[0], data[1], data[2], data[3], data[4], data[5])
    except ValueError as exc:
        raise CodecError(f"clock bytes {data.hex()} are not a date: {exc}") from None


def decode_text(data: bytes) -> str:
    """Serial numbers and model codes: ASCII, NUL or garbage padded; keep the printable part."""
    text = data.split(b"\0", 1)[0].decode("ascii", errors="replace")
    return "".join(c for c in text if c.isprintable() and c != "\ufffd").strip()


def encode_text(text: str, size: int) -> bytes:
    raw = text.encode("ascii")
    if len(raw) > size:
        raise CodecError(f"{text!r} is longer than {size} bytes")
    return raw.ljust(size, b"\0")


@dataclass(frozen=True, slots=True)
class Config1:
    """The parts of the 0xB0 reply a gateway uses."""

    firmware: str
    command_version: int  # >= 2: the terminal answers 0x24 (serial number)

    @classmethod
    def decode(cls, data: bytes) -> Config1:
        _need(data, CONFIG1_SIZE, "config 1")
        return cls(firmware=decode_text(data[0:8]), command_version=data[17])


def encode_config1(firmware: str, command_version: int = 2) -> bytes:
    # password (4 digits, 0), sleep 10 min, volume 5, language 0, format 0x20, state 0, flag 0
    return encode_text(firmware, 8) + bytes([0x40, 0, 0, 10, 5, 0, 0x20, 0, 0, command_version])


def clear_request(device_id: int, kind: int, count: int = 0) -> Request:
    if not 0 <= count <= 0xFFFFFF:
        raise CodecError(f"clear count {count} does not fit in 3 bytes")
    return Request(device_id, CMD_CLEAR_RECORDS, bytes([kind]) + count.to_bytes(3, "big"))


def decode_clear_reply(data: bytes) -> int:
    _need(data, CLEAR_REPLY_SIZE, "clear reply")
    return _u24(data, 0)
