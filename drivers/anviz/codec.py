"""Anviz TC_B frames: CRC-16, frame encode/decode, and the payloads a gateway needs.

Pure functions and values only, no I/O: the transports, the driver and the emulator all
build on this module, so the host side and the simulated device side share one codec.
Facts and errata are in ../shared/protocols/anviz.md; the byte offsets below follow it.

Frame layout (all integers big-endian except the CRC, which goes low byte first):
  request  A5 | CH(4) | CMD | LEN(2) | DATA | CRC(2)         -> 10 + LEN bytes
  response A5 | CH(4) | ACK | RET | LEN(2) | DATA | CRC(2)   -> 11 + LEN bytes
A byte 5 below 0x80 means a request (or the device's 0x7F heartbeat); at or above it, a reply.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

STX = 0xA5
BROADCAST_ID = 0  # every device on the line answers; only safe point-to-point
MAX_DEVICE_ID = 0xFFFFFFFF

# Commands (request codes). A reply's code is the command | 0x80.
CMD_GET_SERIAL = 0x24
CMD_GET_CONFIG1 = 0x30  # firmware version, comm password, command version, ...
CMD_GET_CONFIG2 = 0x32  # includes the real-time push switch
CMD_SET_CONFIG2 = 0x33
CMD_GET_TIME = 0x38
CMD_SET_TIME = 0x39
CMD_GET_RECORD_INFO = 0x3C
CMD_DOWNLOAD_RECORDS = 0x40
CMD_GET_DEVICE_ID = 0x46
CMD_GET_MODEL = 0x48
CMD_CLEAR_RECORDS = 0x4E
CMD_GET_CAPACITY = 0x5D
CMD_HEARTBEAT = 0x7F  # sent by the device, in request form
ACK_REALTIME_RECORD = 0xDF  # a punch pushed by the device, in reply form, unrequested
ACK_PONG = 0xFF  # the host's answer to a heartbeat

RET_SUCCESS = 0x00
RET_FAILED = 0x01

# 0x40 download modes (D[0]) and the per-packet limit (D[1]).
DOWNLOAD_CONTINUE = 0x00
DOWNLOAD_ALL_FROM_START = 0x01
DOWNLOAD_NEW_FROM_START = 0x02
DOWNLOAD_RESEND_LAST = 0x10
MAX_RECORDS_PER_PACKET = 25

# 0x4E clear types (D[0]).
CLEAR_DELETE_ALL = 0
CLEAR_NEW_FLAG_ALL = 1
CLEAR_NEW_FLAG_COUNT = 2

RECORD_SIZE = 14
CONFIG2_SIZE = 15
CONFIG2_REALTIME_INDEX = 4
# Most clients and a captured CrossChex log agree the record clock counts from 2000-01-02
# (the PDFs say 2000-01-01); see anviz.md §5.3. Configurable per terminal.
DEFAULT_EPOCH = dt.datetime(2000, 1, 2)


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


class FrameDecoder:
    """Incremental decoder for a byte stream of frames in either direction.

    Noise before a start byte and frames whose CRC fails come out as `Garbage` so that the
    caller can log and count them. A CRC failure drops only the start byte and rescans,
    because a corrupted LEN would otherwise swallow the next good frame.
    """

    def __init__(self, *, max_data: int = 0xFFFF) -> None:
        self._buffer = bytearray()
        self._junk = bytearray()
        self._junk_reason = ""
        self._max_data = max_data

    @property
    def pending(self) -> bytes:
        """Bytes held back: an incomplete frame, or junk not yet reported."""
        return bytes(self._junk + self._buffer)

    def feed(self, chunk: bytes) -> list[Frame | Garbage]:
        self._buffer += chunk
        return list(self._drain())

    def flush(self) -> Garbage | None:
        """Give up on whatever is held back (the line went quiet mid-frame)."""
        rest = self.pending
        self._buffer.clear()
        self._junk.clear()
        if not rest:
            return None
        reason = self._junk_reason or "incomplete frame"
        self._junk_reason = ""
        return Garbage(rest, reason)

    def _discard(self, count: int, reason: str) -> None:
        if not self._junk:
            self._junk_reason = reason
        self._junk += self._buffer[:count]
        del self._buffer[:count]

    def _report_junk(self) -> Iterator[Garbage]:
        if self._junk:
            yield Garbage(bytes(self._junk), self._junk_reason)
            self._junk.clear()
            self._junk_reason = ""

    def _drain(self) -> Iterator[Frame | Garbage]:
        while self._buffer:
            start = self._buffer.find(STX)
            if start != 0:
                self._discard(len(self._buffer) if start < 0 else start, "noise before start byte")
                continue
            if len(self._buffer) < 6:
                return
            is_reply = self._buffer[5] >= 0x80
            header = 9 if is_reply else 8
            if len(self._buffer) < header:
                return
            length = int.from_bytes(self._buffer[header - 2 : header], "big")
            if length > self._max_data:
                self._discard(1, f"length {length} over the limit")
                continue
            total = header + length + 2
            if len(self._buffer) < total:
                later = self._later_complete_frame()
                if later is None:
                    return  # wait for more bytes
                # a start byte in noise announced a frame that is not coming; a real one follows
                self._discard(later, "noise before start byte")
                continue
            frame = bytes(self._buffer[:total])
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self._discard(1, "bad CRC")
                continue
            del self._buffer[:total]
            yield from self._report_junk()
            yield _parse(frame, is_reply)
        # junk with no frame after it yet stays held until a frame or a flush

    def _later_complete_frame(self) -> int | None:
        """Offset of the first complete, CRC-valid frame after offset 0, if one is buffered."""
        start = self._buffer.find(STX, 1)
        while start > 0:
            if _is_complete_frame(self._buffer, start):
                return start
            start = self._buffer.find(STX, start + 1)
        return None


def _is_complete_frame(buffer: bytearray, start: int) -> bool:
    if len(buffer) - start < 9:
        return False
    header = 9 if buffer[start + 5] >= 0x80 else 8
    total = header + int.from_bytes(buffer[start + header - 2 : start + header], "big") + 2
    frame = buffer[start : start + total]
    return len(frame) == total and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def _parse(frame: bytes, is_reply: bool) -> Frame:
    device_id = int.from_bytes(frame[1:5], "big")
    if is_reply:
        return Response(device_id, frame[5], frame[6], frame[9:-2], raw=frame)
    return Request(device_id, frame[5], frame[8:-2])


def decode_frame(frame: bytes) -> Frame:
    """Decode exactly one complete frame; raises CodecError for anything else."""
    decoder = FrameDecoder()
    out = decoder.feed(frame)
    leftover = decoder.flush()
    garbage = [g for g in [*out, leftover] if isinstance(g, Garbage)]
    frames = [f for f in out if not isinstance(f, Garbage)]
    if garbage or len(frames) != 1:
        problem = garbage[0].reason if garbage else "not exactly one frame"
        raise CodecError(f"{problem}: {frame.hex()}")
    return frames[0]


# ---- payloads -------------------------------------------------------------------------------


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
        _need(data, 18, "record information")
        return cls(*(_u24(data, i) for i in range(0, 18, 3)))


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
        _need(data, 9, "capacity")
        return cls(_u24(data, 0), _u24(data, 3), _u24(data, 6))


def encode_clock(when: dt.datetime) -> bytes:
    """0x38 reply / 0x39 request: YY MM DD hh mm ss in plain binary, year 2000 + YY."""
    if not 2000 <= when.year <= 2255:
        raise CodecError(f"year {when.year} cannot be set on the terminal (2000..2255)")
    return bytes([when.year - 2000, when.month, when.day, when.hour, when.minute, when.second])


def decode_clock(data: bytes) -> dt.datetime:
    _need(data, 6, "clock")
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
        _need(data, 18, "config 1")
        return cls(firmware=decode_text(data[0:8]), command_version=data[17])


def encode_config1(firmware: str, command_version: int = 2) -> bytes:
    # password (4 digits, 0), sleep 10 min, volume 5, language 0, format 0x20, state 0, flag 0
    return encode_text(firmware, 8) + bytes([0x40, 0, 0, 10, 5, 0, 0x20, 0, 0, command_version])


def clear_request(device_id: int, kind: int, count: int = 0) -> Request:
    if not 0 <= count <= 0xFFFFFF:
        raise CodecError(f"clear count {count} does not fit in 3 bytes")
    return Request(device_id, CMD_CLEAR_RECORDS, bytes([kind]) + count.to_bytes(3, "big"))


def decode_clear_reply(data: bytes) -> int:
    _need(data, 3, "clear reply")
    return _u24(data, 0)
