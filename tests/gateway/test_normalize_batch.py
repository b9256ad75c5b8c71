"""`normalize_punches` (one pass, `Punch`es built through their slots) gives exactly the
`Punch` the dataclass's own constructor gives for the same conversion, field by field.

The reference below is `normalize_punch` as it was before the batch: `to_utc`,
`timestamp_flags`, `record_id` and `Punch(...)` with keywords, per punch."""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from punchgate.drivers.base import RawPunch
from punchgate.drivers.registry import describe
from punchgate.gateway.normalize import normalize_punch, normalize_punches, record_id, timestamp_flags, to_utc
from punchgate.sync.records import Punch, Source

NOW = dt.datetime(2026, 3, 29, 12, 0, tzinfo=dt.UTC)


def reference(raw: RawPunch, *, zone: ZoneInfo, source: Source, historical: bool, driver_type: str) -> Punch:
    names = describe(driver_type)
    local = raw.timestamp.replace(microsecond=0, tzinfo=None)
    try:
        utc, offset, dst_flags = to_utc(local, zone)
    except (OverflowError, ValueError):
        utc, offset, dst_flags = local.replace(tzinfo=dt.UTC), 0, ()
    return Punch(
        id=record_id("SN-1", raw),
        device="door",
        device_serial="SN-1",
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
        flags=dst_flags + timestamp_flags(local, utc, NOW),
        raw=raw.raw,
    )


def raws() -> list[RawPunch]:
    """Ordinary punches and every kind of odd one: DST fold and gap, microseconds, an aware
    time, a dead clock, a runaway clock, one out of the zone's range, unknown codes."""
    times = [
        dt.datetime(2026, 3, 2, 8, 1, 15),
        dt.datetime(2026, 3, 29, 2, 30),  # Berlin: in the gap
        dt.datetime(2025, 10, 26, 2, 30),  # Berlin: in the fold
        dt.datetime(2026, 3, 2, 8, 1, 15, 999_999),
        dt.datetime(2026, 3, 2, 8, 1, 15, tzinfo=dt.UTC),
        dt.datetime(1999, 12, 31, 23, 59, 59),
        dt.datetime(2000, 1, 1, 0, 0, 1),
        dt.datetime(2026, 3, 31, 12, 0),  # two days ahead of NOW
        dt.datetime(1, 1, 1, 0, 30),  # out of range once converted
        dt.datetime(9999, 12, 31, 23, 30),
    ]
    punches = []
    for n, when in enumerate(times):
        for state, verify in ((0, 1), (5, 15), (77, 99)):
            punches.append(
                RawPunch(
                    user_id=f"{n}-ü",
                    timestamp=when,
                    state=state,
                    verify=verify,
                    work_code=n,
                    raw=f"{n}\t{when}".encode(),
                )
            )
    return punches


@pytest.mark.parametrize("driver_type", ["zk", "zk-push"])
@pytest.mark.parametrize("historical", [True, False])
def test_the_batch_builds_the_punches_the_constructor_builds(driver_type: str, historical: bool) -> None:
    zone = ZoneInfo("Europe/Berlin")
    given = raws()
    batch = normalize_punches(
        given,
        device="door",
        serial_number="SN-1",
        zone=zone,
        source="push",
        historical=historical,
        driver_type=driver_type,
        now=NOW,
    )
    expected = [
        reference(raw, zone=zone, source="push", historical=historical, driver_type=driver_type)
        for raw in given
    ]
    assert len(batch) == len(expected)
    for made, want in zip(batch, expected, strict=True):
        assert type(made) is Punch
        for field in dataclasses.fields(Punch):  # every slot set, to the same value
            assert getattr(made, field.name) == getattr(want, field.name), field.name
        assert made == want
        assert hash(made) == hash(want)
    # Odd ones did come out odd (the comparison above is not between two empty flag sets).
    assert {flag for punch in batch for flag in punch.flags} == {
        "dst_gap",
        "dst_fold",
        "before_2000",
        "in_future",
    }


def test_a_built_punch_is_as_frozen_and_replaceable_as_any() -> None:
    punch = normalize_punch(
        raws()[0], device="door", serial_number="SN-1", zone=ZoneInfo("UTC"), source="poll", historical=True
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        punch.user_id = "someone else"  # type: ignore[misc]
    live = dataclasses.replace(punch, historical=False)
    assert live.historical is False
    assert dataclasses.replace(live, historical=True) == punch
    assert punch.manual is None
