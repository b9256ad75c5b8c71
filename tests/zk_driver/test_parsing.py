"""Pure parsing and error mapping of the ZK driver (no sockets)."""

from __future__ import annotations

import datetime as dt
import socket
import struct

import pytest
from zk.exception import ZKErrorResponse, ZKNetworkError

from punchgate.drivers.base import DriverTimeoutError, ProtocolError, UnreachableError
from punchgate.drivers.zk import protocol as zp
from punchgate.drivers.zk.errors import map_error
from punchgate.drivers.zk.parsing import (
    detect_eight_byte_variant,
    invalid_time_sentinel,
    parse_attendance,
    parse_users,
    raw_punch_from_record,
)
from punchgate.gateway.normalize import EARLIEST_VALID

WHEN = dt.datetime(2024, 3, 5, 8, 1, 2)
FEB_31 = ((((24 * 12 + 1) * 31 + 30) * 24 + 9) * 60 + 15) * 60  # 2024-02-31 09:15:00, not a date


def record(n: int, *, time_raw: int | None = None, user: str | None = None) -> zp.AttendanceRecord:
    raw_time = zp.encode_time(WHEN + dt.timedelta(minutes=n)) if time_raw is None else time_raw
    return zp.AttendanceRecord(
        uid=n, user_id=user or str(n), time_raw=raw_time, timestamp=None, verify=1, state=n % 6
    )


def data_set(size: int, count: int, variant: zp.EightByteVariant = "pyzk") -> bytes:
    return zp.encode_data_set(
        zp.encode_attendance(record(n), size, eight_byte_variant=variant) for n in range(1, count + 1)
    )


@pytest.mark.parametrize(
    ("size", "variant"), [(8, "pyzk"), (8, "zem500"), (16, "pyzk"), (40, "pyzk"), (49, "pyzk")]
)
def test_every_record_size_decodes_completely(size: int, variant: zp.EightByteVariant) -> None:
    parsed = parse_attendance(data_set(size, 30, variant), 30)
    assert parsed.problems == ()
    assert parsed.record_size == size
    assert [r.timestamp for r in parsed.records] == [WHEN + dt.timedelta(minutes=n) for n in range(1, 31)]
    assert [r.state for r in parsed.records] == [n % 6 for n in range(1, 31)]


def test_eight_byte_variant_is_recognised_from_the_records() -> None:
    body = data_set(8, 50, "zem500")[4:]
    assert detect_eight_byte_variant(body) == "zem500"
    assert detect_eight_byte_variant(data_set(8, 50, "pyzk")[4:]) == "pyzk"


def test_short_set_is_reported_with_what_was_parsed() -> None:
    parsed = parse_attendance(data_set(40, 9, "pyzk"), 10, size_hint=40)
    assert len(parsed.records) == 9
    assert parsed.record_size == 40
    assert any("reports 10 records, the data set holds 9" in p for p in parsed.problems)


def test_byte_count_that_disagrees_with_the_body_is_a_problem() -> None:
    good = data_set(16, 4)
    lying = struct.pack("<I", 16 * 5) + good[4:]
    parsed = parse_attendance(lying, 5)
    assert len(parsed.records) == 4
    assert any("declares 80 bytes but carries 64" in p for p in parsed.problems)


def test_truncated_record_leaves_trailing_bytes_noted() -> None:
    good = data_set(40, 3)
    cut = struct.pack("<I", 40 * 3 - 7) + good[4:-7]
    parsed = parse_attendance(cut, 3, size_hint=40)
    assert len(parsed.records) == 2
    assert any("33 trailing bytes" in p for p in parsed.problems)


def test_no_byte_count_at_all() -> None:
    parsed = parse_attendance(b"\x01", 3)
    assert parsed.records == [] and parsed.problems


def test_invalid_date_keeps_the_record_with_a_flagged_sentinel() -> None:
    records = [record(1), record(2, time_raw=FEB_31), record(3)]
    data = zp.encode_data_set(zp.encode_attendance(r, 40) for r in records)
    parsed = parse_attendance(data, 3)
    assert parsed.problems == ()
    bad = raw_punch_from_record(parsed.records[1])
    assert bad.timestamp == invalid_time_sentinel(FEB_31)
    assert bad.timestamp < EARLIEST_VALID  # normalisation flags it before_2000 (clock_invalid)
    assert bad.raw == zp.encode_attendance(records[1], 40)
    # Different impossible values stay different, so their record ids differ too.
    assert invalid_time_sentinel(FEB_31) != invalid_time_sentinel(FEB_31 + 1)
    assert invalid_time_sentinel(0xFFFFFFFF).year < 2000


def test_gbk_names_decode_with_the_terminal_encoding() -> None:
    name = "张伟".encode("gbk")
    tft = struct.pack("<HB8s24sIBH3H24s", 1, 0, b"", name, 0, 1, 0, 0, 0, 0, b"1001")
    bw = struct.pack("<HB5s8sIxBhI", 2, 0, b"", name, 0, 1, 0, 1002)
    assert [u.name for u in parse_users(zp.encode_data_set([tft]), 1, "gbk")] == ["张伟"]
    assert [u.name for u in parse_users(zp.encode_data_set([bw]), 1, "gbk")] == ["张伟"]
    # Read as UTF-8 (the wrong encoding) the damage is visible, never silently dropped.
    assert "\ufffd" in parse_users(zp.encode_data_set([tft]), 1, "utf-8")[0].name


def _wrapped(inner: BaseException) -> ZKNetworkError:
    try:
        try:
            raise inner
        except Exception as exc:
            raise ZKNetworkError(str(exc)) from None
    except ZKNetworkError as outer:
        outer.__context__ = inner
        return outer


@pytest.mark.parametrize(
    ("exc", "connecting", "udp", "expected"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True, False, UnreachableError),
        (socket.gaierror(-2, "Name or service not known"), True, False, UnreachableError),
        (_wrapped(TimeoutError("timed out")), False, False, DriverTimeoutError),
        (_wrapped(TimeoutError("timed out")), True, True, UnreachableError),
        (_wrapped(TimeoutError("timed out")), True, False, DriverTimeoutError),
        (_wrapped(ConnectionResetError(104, "reset")), False, False, UnreachableError),
        (ZKErrorResponse("can't read sizes"), False, False, ProtocolError),
        (struct.error("unpack requires a buffer of 8 bytes"), False, False, ProtocolError),
    ],
)
def test_errors_map_to_the_driver_hierarchy(
    exc: BaseException, connecting: bool, udp: bool, expected: type[Exception]
) -> None:
    mapped = map_error(exc, device="door-1", what="step", connecting=connecting, udp=udp)
    assert type(mapped) is expected
    assert str(mapped).startswith("door-1: step")
