"""Turning what a ZK terminal sent into the driver's values: pure functions, no sockets.

The driver reads whole tables through pyzk's buffered read but never lets pyzk decode them:
pyzk 0.9 steps through attendance records at fixed sizes and with one 8-byte layout, and one
impossible date aborts its whole read. Here attendance sets are decoded by the codec
(`punchgate.drivers.zk.protocol`) for every record size (8 in both byte orders, 16, 40, 49),
checked against the count the terminal reports, and an impossible date becomes a flagged
sentinel instead of an exception. User names are decoded in the terminal's own encoding,
and the answers to the info queries are assembled into a `DeviceInfo`.

Unit-tested without sockets in tests/zk_driver/test_parsing.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from punchgate.drivers.base import DeviceInfo, RawPunch
from punchgate.drivers.packed import PackedRecords
from punchgate.drivers.zk import protocol as zp

# A packed time that is not a date (31 February, month 13) becomes this epoch plus the raw
# value in seconds: always before 2000 (at most 1936-02-07), so normalisation flags it
# clock_invalid; distinct raw values stay distinct (stable, unique record ids); the raw
# bytes travel with the punch.
INVALID_TIME_EPOCH: Final = dt.datetime(1800, 1, 1)


def invalid_time_sentinel(time_raw: int) -> dt.datetime:
    """The stand-in timestamp for a record whose packed time is not a real date."""
    return INVALID_TIME_EPOCH + dt.timedelta(seconds=time_raw)


# ---------------------------------------------------------------------------------------
# Attendance
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttendanceParse:
    """The outcome of decoding one attendance data set."""

    records: list[zp.AttendanceRecord]
    record_size: int | None
    problems: tuple[str, ...]  # empty when the set adds up to the reported count


def _plausible(record: zp.AttendanceRecord) -> int:
    return int(record.timestamp is not None) + int(0 <= record.state <= 5)


def detect_eight_byte_variant(body: bytes, sample: int = 200) -> zp.EightByteVariant:
    """Which 8-byte layout a log uses: the one whose records look like real punches.

    The two layouts put the time at different offsets, so the wrong one yields impossible
    dates and state codes far above 5. Ties go to pyzk's layout (the commoner one).
    """
    scores: dict[zp.EightByteVariant, int] = {"pyzk": 0, "zem500": 0}
    for offset in range(0, min(len(body) // 8, sample) * 8, 8):
        chunk = body[offset : offset + 8]
        for variant in scores:
            scores[variant] += _plausible(zp.decode_attendance(chunk, 8, eight_byte_variant=variant))
    return "zem500" if scores["zem500"] > scores["pyzk"] else "pyzk"


def _pick_record_size(body_len: int, reported: int, hint: int | None) -> int | None:
    sizes = zp.ATTENDANCE_RECORD_SIZES
    if body_len == 0:
        return hint
    if reported > 0 and body_len % reported == 0 and body_len // reported in sizes:
        return body_len // reported
    # The set does not add up: find the layout that explains the most of it, so the
    # diagnostics can say what was there. Whole multiples first, the known size first.
    dividing = [s for s in sizes if body_len % s == 0]
    if hint in dividing:
        return hint
    candidates = dividing or ([hint] if hint else list(sizes))
    return min(candidates, key=lambda s: (body_len // s > max(reported, 1), abs(body_len // s - reported)))


def parse_attendance(data: bytes, reported: int, *, size_hint: int | None = None) -> AttendanceParse:
    """Decode an attendance data set (u32 byte count + records) against the reported count.

    Never raises for bad content: whatever whole records are there are decoded, and every
    reason the set does not match `reported` is listed in `problems`.
    """
    problems: list[str] = []
    if len(data) < 4:
        problems.append(f"data set of {len(data)} bytes has no byte count")
        return AttendanceParse([], None, tuple(problems))
    (declared,) = struct.unpack_from("<I", data)
    body = bytes(data[4:])
    if declared != len(body):
        problems.append(f"data set declares {declared} bytes but carries {len(body)}")
        body = body[:declared]
    size = _pick_record_size(len(body), reported, size_hint)
    if size is None:
        if reported:
            problems.append(f"terminal reports {reported} records, the data set holds none")
        return AttendanceParse([], None, tuple(problems))
    whole = len(body) - len(body) % size
    if whole != len(body):
        problems.append(f"{len(body) - whole} trailing bytes after {whole // size} records of {size} bytes")
    variant = detect_eight_byte_variant(body[:whole]) if size == 8 else "pyzk"
    records = [
        zp.decode_attendance(body[i : i + size], size, eight_byte_variant=variant)
        for i in range(0, whole, size)
    ]
    if len(records) != reported:
        problems.append(f"terminal reports {reported} records, the data set holds {len(records)}")
    return AttendanceParse(records, size, tuple(problems))


class AttendanceStream:
    """An attendance data set split into records as it arrives, chunk by chunk (`feed`), when
    it adds up. Each part is handed out packed (`PackedRecords`): a record is decoded when
    the caller reads it, so a whole read's already stored prefix costs no decoding.

    Only a set whose header declares exactly the bytes announced for it, and that many bytes
    make `reported` records of one known size, is decoded on the way (`size` is then known
    from its first chunk, and so, for 8-byte records, is the layout: from the first 200
    records, as `parse_attendance` decides it). Anything else is left whole for
    `parse_attendance` at the end, which says what does not add up (`size` stays None and
    `feed` returns nothing). A record split between two chunks waits for its second part.
    """

    def __init__(self, reported: int) -> None:
        self.reported = reported
        self.size: int | None = None
        self.decoded = 0  # records handed out so far
        self.invalid = 0  # records decoded so far with an impossible date (the sentinel)
        self._body = 0  # the records' bytes the header declares
        self._variant: zp.EightByteVariant | None = None
        self._pending = bytearray()
        self._off = False

    def feed(self, data: bytes, total: int) -> Sequence[RawPunch]:
        """The records completed by `data`, the next chunk of a set of `total` bytes (packed)."""
        if self._off:
            return []
        pending = self._pending
        pending += data
        if self.size is None:
            if len(pending) < 4:
                return []
            (declared,) = struct.unpack_from("<I", pending)
            size = declared // self.reported if self.reported > 0 else 0
            if (
                declared != total - 4
                or size * self.reported != declared
                or size not in zp.ATTENDANCE_RECORD_SIZES
            ):
                self._off = True  # not one that adds up: decoded whole at the end, with diagnostics
                self._pending = bytearray()
                return []
            self.size, self._body = size, declared
            del pending[:4]
        size = self.size
        if self._variant is None:
            sample = min(self._body, 200 * 8)
            if size == 8 and len(pending) < sample:
                return []  # the layout is decided on the first 200 records, as for a whole set
            self._variant = detect_eight_byte_variant(bytes(pending[:sample])) if size == 8 else "pyzk"
        whole = len(pending) - len(pending) % size
        body = bytes(pending[:whole])
        del pending[:whole]
        self.decoded += whole // size
        return PackedRecords(body, size, self._decode_one)

    def _decode_one(self, raw: bytes) -> RawPunch:
        """One record, when the caller reads it (a stored prefix is matched by its bytes and
        never decoded: `PackedRecords`); an impossible date is counted in `invalid`."""
        assert self.size is not None and self._variant is not None  # set before any record
        record = zp.decode_attendance(raw, self.size, eight_byte_variant=self._variant)
        if record.timestamp is None:
            self.invalid += 1
        return raw_punch_from_record(record)


def raw_punch_from_record(record: zp.AttendanceRecord) -> RawPunch:
    """A RawPunch for one decoded record (impossible dates get the documented sentinel)."""
    when = record.timestamp if record.timestamp is not None else invalid_time_sentinel(record.time_raw)
    return RawPunch(
        user_id=record.user_id,
        timestamp=when,
        state=record.state,
        verify=record.verify,
        work_code=record.work_code,
        raw=record.raw,
    )


# ---------------------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------------------


def _name_slice(record_size: int) -> slice:
    # 72-byte: uid u16, privilege u8, password 8, name 24. 28-byte: uid, privilege, password 5, name 8.
    return slice(11, 35) if record_size == 72 else slice(8, 16)


def parse_users(data: bytes, reported: int, encoding: str) -> list[zp.UserRecord]:
    """Decode a user data set; names (and TFT user ids) in the terminal's own encoding.

    The codec decodes text as UTF-8; GBK or CP1251 names need the terminal's encoding, and
    undecodable bytes become U+FFFD (visible) rather than vanishing as in pyzk.
    """
    users = zp.decode_user_set(data, reported)
    if not users:
        return users
    body = bytes(data[4:])
    size = len(body) // len(users)
    out = []
    for index, user in enumerate(users):
        raw = body[index * size : (index + 1) * size]
        name = raw[_name_slice(size)].split(b"\x00", 1)[0].decode(encoding, errors="replace").strip()
        user_id = user.user_id
        if size == 72:
            user_id = raw[48:72].split(b"\x00", 1)[0].decode(encoding, errors="replace")
        out.append(dataclasses.replace(user, name=name, user_id=user_id))
    return out


# ---------------------------------------------------------------------------------------
# Device info
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InfoAnswers:
    """The terminal's answers to the queries behind `ZkDriver.info()`, as received."""

    sizes: zp.FreeSizes
    clock_raw: int
    enabled: bool | None  # None: the firmware does not answer STATE_RRQ
    device_name: str
    serial_number: str
    firmware: str
    platform: str
    mac: str


def decode_clock(clock_raw: int) -> dt.datetime:
    """The terminal's clock; a dead clock (no real date) is flagged by the sentinel, not fatal."""
    try:
        return zp.decode_time(clock_raw)
    except zp.ZkFrameError:
        return invalid_time_sentinel(clock_raw)


def device_info(answers: InfoAnswers, *, transport: str) -> DeviceInfo:
    """The common DeviceInfo, with the ZK-only counts (and the enabled state) in `extra`."""
    sizes = answers.sizes
    extra: dict[str, Any] = {
        "fingers": sizes.fingers,
        "finger_capacity": sizes.finger_capacity,
        "admins": sizes.admins,
        "oplog_records": sizes.oplog,
        "clock_raw": answers.clock_raw,
        "transport": transport,
    }
    if sizes.faces is not None:
        extra.update(faces=sizes.faces, face_capacity=sizes.face_capacity)
    if answers.enabled is not None:  # the health model's stuck_disabled check reads it
        extra["enabled"] = answers.enabled
    return DeviceInfo(
        serial_number=answers.serial_number,
        model=answers.device_name,
        device_name=answers.device_name,
        firmware=answers.firmware,
        platform=answers.platform,
        mac=answers.mac,
        clock=decode_clock(answers.clock_raw),
        user_count=sizes.users,
        user_capacity=sizes.user_capacity,
        record_count=sizes.records,
        record_capacity=sizes.record_capacity,
        extra=extra,
    )
