"""The fast paths of normalisation give exactly what the full conversion gives.

`to_utc` converts a time in an hour with one offset throughout by subtraction, and the record
id skips a copy of a time without microseconds. Checked against the full conversion (kept
here as the reference) every 10 minutes through a year of zones with DST, half-hour DST,
odd offsets and none, and on the transitions themselves to the second.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from punchgate.drivers.base import RawPunch
from punchgate.gateway.normalize import normalize_punch, record_id, to_utc
from punchgate.sync.records import FLAG_DST_FOLD, FLAG_DST_GAP

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "America/St_Johns",  # -03:30, DST
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Asia/Kathmandu",  # +05:45, no DST
    "Pacific/Apia",  # skipped a whole day in 2011
    "UTC",
]


def reference(local: dt.datetime, zone: ZoneInfo) -> tuple[dt.datetime, int, tuple[str, ...]]:
    """`to_utc` as it was before the fast path: every time converted in full."""
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    flags: tuple[str, ...] = ()
    if first.utcoffset() != second.utcoffset():
        round_trip = first.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)
        flags = (FLAG_DST_FOLD,) if round_trip == local else (FLAG_DST_GAP,)
    utc = first.astimezone(dt.UTC)
    offset = first.utcoffset() or dt.timedelta(0)
    if flags == (FLAG_DST_GAP,):
        offset = utc.astimezone(zone).utcoffset() or offset
    return utc, int(offset.total_seconds()), flags


@pytest.mark.parametrize("name", ZONES)
def test_a_year_every_ten_minutes(name: str) -> None:
    zone = ZoneInfo(name)
    local = dt.datetime(2024, 1, 1, 0, 3, 17)
    while local.year == 2024:
        assert to_utc(local, zone) == reference(local, zone), local
        local += dt.timedelta(minutes=10)


@pytest.mark.parametrize("name", ZONES)
def test_every_second_around_each_transition(name: str) -> None:
    zone = ZoneInfo(name)
    local = dt.datetime(2011, 1, 1)
    while local.year < 2025:
        before = local.replace(tzinfo=zone).utcoffset()
        after = (local + dt.timedelta(hours=6)).replace(tzinfo=zone).utcoffset()
        if before != after:  # a transition in these 6 hours: every second of them
            for second in range(0, 6 * 3600, 7):
                moment = local + dt.timedelta(seconds=second)
                assert to_utc(moment, zone) == reference(moment, zone), moment
        local += dt.timedelta(hours=6)


def test_record_ids_and_times_do_not_depend_on_the_fast_paths() -> None:
    zone = ZoneInfo("Europe/Berlin")
    now = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    for when in (
        dt.datetime(2024, 3, 31, 2, 30, 0),  # in the gap
        dt.datetime(2024, 10, 27, 2, 30, 0),  # in the fold
        dt.datetime(2024, 5, 1, 8, 0, 0, 250_000),  # with microseconds
        dt.datetime(2024, 5, 1, 8, 0, 0),
    ):
        raw = RawPunch(user_id="7", timestamp=when, state=0, verify=1)
        punch = normalize_punch(
            raw, device="d", serial_number="S", zone=zone, source="poll", historical=True, now=now
        )
        assert punch.id == record_id("S", raw)
        assert punch.local_time == when.replace(microsecond=0)
        utc, offset, flags = reference(when.replace(microsecond=0), zone)
        assert (punch.utc_time, punch.utc_offset_seconds) == (utc, offset)
        assert set(flags) <= set(punch.flags)
    assert record_id(
        "S", RawPunch(user_id="7", timestamp=dt.datetime(2024, 5, 1, 8, 0, 0, 250_000), state=0, verify=1)
    ) == record_id("S", RawPunch(user_id="7", timestamp=dt.datetime(2024, 5, 1, 8, 0, 0), state=0, verify=1))
