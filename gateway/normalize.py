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

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterable
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
    """One raw punch normalised (`normalize_punches` of one)."""
    return normalize_punches(
        (raw,),
        device=device,
        serial_number=serial_number,
        zone=zone,
        source=source,
        historical=historical,
        driver_type=driver_type,
        now=now,
    )[0]


def normalize_punches(
    raws: Iterable[RawPunch],
    *,
    device: str,
    serial_number: str,
    zone: ZoneInfo,
    source: Source,
    historical: bool,
    driver_type: str = "zk",
    now: dt.datetime | None = None,
) -> list[Punch]:
    """Raw punches of one terminal normalised, in order: exactly `normalize_punch` of each.

    One pass with what is the same for every punch looked up once (a push backlog post is
    500 punches), each `Punch` built by `_punch` instead of the dataclass's keyword `__init__`."""
    now = now or dt.datetime.now(dt.UTC)
    names = describe(driver_type)  # each driver names its own state and verify codes
    state_names, verify_names = names.state_names, names.verify_names
    future = now + FUTURE_TOLERANCE
    punches: list[Punch] = []
    for raw in raws:
        when = raw.timestamp
        local = (
            when
            if when.microsecond == 0 and when.tzinfo is None
            else when.replace(microsecond=0, tzinfo=None)
        )
        try:
            utc, offset, flags = to_utc(local, zone)
        except (OverflowError, ValueError):
            # A clock so broken it is out of range for the zone's rules: keep it, flag it.
            utc, offset, flags = local.replace(tzinfo=dt.UTC), 0, ()
        # `timestamp_flags`, inline.
        if local < EARLIEST_VALID:
            flags += (FLAG_BEFORE_2000,)
        elif utc > future:
            flags += (FLAG_IN_FUTURE,)
        state, verify = raw.state, raw.verify
        punches.append(
            _punch(
                record_id(serial_number, raw),
                device,
                serial_number,
                raw.user_id,
                local,
                utc,
                offset,
                state,
                state_names.get(state),
                verify,
                verify_names.get(verify),
                raw.work_code,
                source,
                historical,
                flags,
                raw.raw,
            )
        )
    return punches


# `Punch(**fields)` runs the frozen dataclass's generated `__init__`: one `object.__setattr__`
# per field, about 3.4 µs of a punch's 10 µs of normalising. `_punch` makes the same object
# with the slots' own setters (about 1.2 µs). The slots are `Punch`'s fields in declaration
# order; the check below makes a field added to `Punch` fail at import, not go unset
# (tests/gateway/test_normalize_batch.py compares the objects field by field).
_FIELDS = tuple(field.name for field in dataclasses.fields(Punch))
if tuple(Punch.__slots__) != _FIELDS:
    raise ImportError(f"Punch's slots {Punch.__slots__} are not its fields {_FIELDS}")
(
    _set_id,
    _set_device,
    _set_serial,
    _set_user,
    _set_local,
    _set_utc,
    _set_offset,
    _set_state,
    _set_state_name,
    _set_verify,
    _set_verify_name,
    _set_work_code,
    _set_source,
    _set_historical,
    _set_flags,
    _set_raw,
    _set_manual,
) = (getattr(Punch, name).__set__ for name in _FIELDS)


def _punch(
    ident: str,
    device: str,
    serial: str,
    user_id: str,
    local: dt.datetime,
    utc: dt.datetime,
    offset: int,
    state: int,
    state_name: str | None,
    verify: int,
    verify_name: str | None,
    work_code: int,
    source: Source,
    historical: bool,
    flags: tuple[str, ...],
    raw: bytes,
) -> Punch:
    """`Punch(...)` of these fields (in declaration order; `manual` None): no defaults, no
    checks, the values are what `normalize_punches` computed. Unrolled: a loop over the
    setters costs a third of what it saves."""
    punch: Punch = object.__new__(Punch)
    _set_id(punch, ident)
    _set_device(punch, device)
    _set_serial(punch, serial)
    _set_user(punch, user_id)
    _set_local(punch, local)
    _set_utc(punch, utc)
    _set_offset(punch, offset)
    _set_state(punch, state)
    _set_state_name(punch, state_name)
    _set_verify(punch, verify)
    _set_verify_name(punch, verify_name)
    _set_work_code(punch, work_code)
    _set_source(punch, source)
    _set_historical(punch, historical)
    _set_flags(punch, flags)
    _set_raw(punch, raw)
    _set_manual(punch, None)
    return punch
