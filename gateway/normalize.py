"""Turning a terminal's raw punch into the normalised, identified Punch — in this one place.

* Identity (docs/mqtt-contract.md, "Record ids"): `record_id` hashes what the terminal itself said about the punch
  (serial, user, terminal-local time, state, verify). Never the log index, never arrival time,
  so re-reads, restarts and a second gateway all produce the same id.
* Time (docs/mqtt-contract.md, "Time"): the terminal's naive local time is interpreted in its IANA zone. A time
  that happens twice (DST fold) takes the earlier instant and is flagged; a time that never
  happened (DST gap) is shifted forward by the gap and flagged. Times before 2000 or more than
  a day ahead of the gateway are flagged as invalid: stored and forwarded, never dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from zoneinfo import ZoneInfo

from punchgate.drivers.base import RawPunch
from punchgate.drivers.registry import describe
from punchgate.sync.records import (
    FLAG_BEFORE_2000,
    FLAG_DST_FOLD,
    FLAG_DST_GAP,
    FLAG_IN_FUTURE,
    Punch,
    Source,
)

ID_VERSION = "1"
EARLIEST_VALID = dt.datetime(2000, 1, 1, 0, 0, 1)
FUTURE_TOLERANCE = dt.timedelta(days=1)


def record_id(serial_number: str, raw: RawPunch) -> str:
    """The stable id of a punch: 32 hex digits of SHA-256 over its identifying fields.

    Documented for integrators in docs/mqtt-contract.md so they can recompute it.
    """
    when = raw.timestamp
    key = "\x1f".join(
        (
            ID_VERSION,
            serial_number,
            raw.user_id,
            (when if when.microsecond == 0 else when.replace(microsecond=0)).isoformat(),
            str(raw.state),
            str(raw.verify),
        )
    )
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


# Hours of a zone's local time in which one offset holds throughout (no fold, no gap, no change
# of offset), and that offset: most punches fall in one, and converting them is then a
# subtraction. Bounded: a log spans weeks, not years of hours.
_ONE_OFFSET_HOURS: dict[tuple[ZoneInfo, int, int, int, int], dt.timedelta | None] = {}
_ONE_OFFSET_HOURS_MAX = 50_000
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)
_UTC_EPOCH = _NAIVE_EPOCH.replace(tzinfo=dt.UTC)


def _hour_offset(local: dt.datetime, zone: ZoneInfo) -> dt.timedelta | None:
    """The offset in force through the whole local hour of `local`, or None when the hour holds
    a transition (or is out of the zone's range): then every time in it is converted in full."""
    key = (zone, local.year, local.month, local.day, local.hour)
    try:
        return _ONE_OFFSET_HOURS[key]
    except KeyError:
        pass
    try:
        start = local.replace(minute=0, second=0, microsecond=0)
        ends = (start, start + dt.timedelta(minutes=59, seconds=59))
        offsets = {end.replace(tzinfo=zone, fold=fold).utcoffset() for end in ends for fold in (0, 1)}
        offset = offsets.pop() if len(offsets) == 1 else None
    except (OverflowError, ValueError):
        offset = None
    if len(_ONE_OFFSET_HOURS) >= _ONE_OFFSET_HOURS_MAX:
        _ONE_OFFSET_HOURS.clear()
    _ONE_OFFSET_HOURS[key] = offset
    return offset


def to_utc(local: dt.datetime, zone: ZoneInfo) -> tuple[dt.datetime, int, tuple[str, ...]]:
    """(UTC instant, offset in seconds, DST flags) for a naive terminal-local time."""
    offset = _hour_offset(local, zone)
    if offset is not None:  # one offset all hour: no fold, no gap
        # `(local - offset).replace(tzinfo=dt.UTC)`, the same instant, in timedelta arithmetic
        # (a datetime's replace() costs about half of this function).
        return _UTC_EPOCH + (local - (_NAIVE_EPOCH + offset)), int(offset.total_seconds()), ()
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    flags: tuple[str, ...] = ()
    if first.utcoffset() != second.utcoffset():
        round_trip = first.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)
        # In a fold both readings round-trip to the same wall time; in a gap neither does.
        flags = (FLAG_DST_FOLD,) if round_trip == local else (FLAG_DST_GAP,)
    utc = first.astimezone(dt.UTC)
    offset = first.utcoffset() or dt.timedelta(0)
    if flags == (FLAG_DST_GAP,):
        # fold=0 in a gap reads the wall time with the offset from before the jump, which
        # lands after the jump: the punch moves forward by the gap. Report the offset in
        # force at that instant.
        offset = utc.astimezone(zone).utcoffset() or offset
    return utc, int(offset.total_seconds()), flags


def timestamp_flags(local: dt.datetime, utc: dt.datetime, now: dt.datetime) -> tuple[str, ...]:
    """Flags for times that cannot be right (dead clock battery, unset or runaway clock)."""
    if local < EARLIEST_VALID:
        return (FLAG_BEFORE_2000,)
    if utc > now + FUTURE_TOLERANCE:
        return (FLAG_IN_FUTURE,)
    return ()


def normalize_punch(
    raw: RawPunch,
    *,
    device: str,
    serial_number: str,
    zone: ZoneInfo,
    source: Source,
    historical: bool,
    driver_type: str = "zk",
    now: dt.datetime | None = None,
) -> Punch:
    now = now or dt.datetime.now(dt.UTC)
    names = describe(driver_type)  # each driver names its own state and verify codes
    when = raw.timestamp
    local = (
        when if when.microsecond == 0 and when.tzinfo is None else when.replace(microsecond=0, tzinfo=None)
    )
    try:
        utc, offset, dst_flags = to_utc(local, zone)
    except (OverflowError, ValueError):
        # A clock so broken it is out of range for the zone's rules: keep it, flag it.
        utc, offset, dst_flags = local.replace(tzinfo=dt.UTC), 0, ()
    return Punch(
        id=record_id(serial_number, raw),
        device=device,
        device_serial=serial_number,
        user_id=raw.user_id,
        local_time=local,
        utc_time=utc,
        utc_offset_seconds=offset,
        state=raw.state,
        state_name=names.state_names.get(raw.state),
        verify=raw.verify,
        verify_name=names.verify_names.get(raw.verify),
        work_code=raw.work_code,
        source=source,
        historical=historical,
        flags=dst_flags + timestamp_flags(local, utc, now),
        raw=raw.raw,
    )
